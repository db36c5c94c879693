#!/bin/sh
# Run `weed mini` with S3 on 8333, one identity from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
# and the bucket(s) in S3_BUCKET created at start.
set -eu
: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID}" "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY}"
config=/data/s3.json
cat >"$config" <<JSON
{"identities": [{"name": "platform",
  "credentials": [{"accessKey": "$AWS_ACCESS_KEY_ID", "secretKey": "$AWS_SECRET_ACCESS_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
# -ip: the components find each other inside this container; only S3 is used from outside.
exec weed mini -dir=/data -ip=127.0.0.1 -ip.bind=0.0.0.0 -s3.port=8333 -s3.config="$config" \
  -bucket="${S3_BUCKET:-videos}" -admin.ui=false -webdav=false "$@"
