#!/bin/sh
# with-ca.sh COMMAND...: run a command that downloads (pip, npm) inside `docker build`, trusting
# the base image's CA certificates plus the ones handed to the build for a network that
# intercepts TLS: the BuildKit secret `ca_bundle` and any docker/certs/*.crt or *.pem in the
# context (bind-mounted at /mnt/docker). Neither ends up in a layer.
set -eu
bundle=$(mktemp)
for f in /etc/ssl/certs/ca-certificates.crt /run/secrets/ca_bundle \
  /mnt/docker/certs/*.crt /mnt/docker/certs/*.pem; do
  if [ -s "$f" ]; then cat "$f" >>"$bundle"; fi
done
export PIP_CERT="$bundle" SSL_CERT_FILE="$bundle" REQUESTS_CA_BUNDLE="$bundle" \
  NODE_EXTRA_CA_CERTS="$bundle"
status=0
"$@" || status=$?
rm -f "$bundle"
exit "$status"
