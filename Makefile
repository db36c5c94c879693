# Two commands: `make run` installs what is missing and starts everything in the foreground;
# `make test` installs what the tests need and runs lint, types, the test suite and, at its end,
# the containers' end-to-end test (`make test-compose`).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run install install-test test lint start stop clean test-compose

run: install
	$(PY) -m services.launcher

install:
	bash scripts/install.sh

install-test:
	bash scripts/install.sh --test

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services gateway vp
	$(VENV)/bin/lint-imports

# The tests run on the embedded SQLite and the local folder (all but tests/s3), then the files
# whose outcome depends on the database (jobs, claims, leases, uploads, events, admin, stored
# text and bodies) on PostgreSQL (a fresh database per test platform on TEST_DATABASE_URL's
# server) with the worker's own tests and the S3 scenarios (tests/s3: a SeaweedFS server the
# tests start; PostgreSQL and a bucket, as machines share them). Then the platform files that
# check through the API (or Platform.files/stored) run again with every platform on that S3
# server (TEST_STORAGE=s3): all of them on SQLite, the upload-transcode-stream core on
# PostgreSQL. Left out of the PostgreSQL pass, to keep make test near 40 minutes: files whose
# outcome the database does not change (media output, serving, CORS, pages, the CLI, the
# launcher's processes, access tokens: HMAC, no rows; disk-space bounds). Left out of the S3
# pass: tests/test_engine.py, whose kill -9, second worker and outage have S3 versions in
# tests/s3.
TEST_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres
DB_TESTS := tests/test_engine.py tests/test_faults.py tests/test_transcoding.py \
	tests/test_upload.py tests/test_tus.py tests/test_streaming.py tests/test_admin.py \
	tests/test_metadata.py tests/test_events.py tests/test_direct_upload.py \
	tests/test_captions.py tests/test_hostile.py tests/test_fuzz.py tests/test_bodies.py \
	tests/test_upload_hashing.py tests/test_chunk_checks.py tests/test_public_errors.py \
	tests/test_watch.py tests/transcoding tests/s3
S3_DB_TESTS := tests/test_transcoding.py tests/test_upload.py tests/test_tus.py \
	tests/test_streaming.py
S3_TESTS := $(S3_DB_TESTS) tests/test_metadata.py tests/test_access.py \
	tests/test_playback_cors.py tests/test_captions.py tests/test_direct_upload.py \
	tests/test_audio_only.py tests/test_media_assets.py tests/test_hevc.py \
	tests/test_admin.py tests/test_hostile.py tests/test_public_errors.py \
	tests/test_upload_bounds.py tests/test_upload_hashing.py tests/test_crafted.py \
	tests/test_caption_serving.py tests/test_metrics.py tests/test_watch.py \
	tests/test_chunk_checks.py

# The SQLite pass in one lane; the PostgreSQL, S3 and S3 + PostgreSQL passes one after
# another in a second lane beside it (scripts/test_lanes.sh: a pass alone leaves a quarter
# of the two cores idle, and no pass can disturb another's platforms). The passes share one
# fresh folder of rendered test clips (TEST_CLIP_CACHE, tests/clips.py): each clip is
# rendered once per make test, not once per pass; the folder goes when make test ends, or is
# interrupted.
test: lint
	bash scripts/ensure_postgres.sh
	clips=$$(mktemp -d -t vp-test-clips.XXXXXX) && trap 'rm -rf "$$clips"' EXIT \
	&& trap 'exit 130' INT TERM && TEST_CLIP_CACHE=$$clips \
	bash scripts/test_lanes.sh \
		sqlite '$(PY) -m pytest --ignore=tests/s3' \
		postgres-s3 'TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest $(DB_TESTS) \
			&& TEST_STORAGE=s3 $(PY) -m pytest $(S3_TESTS) \
			&& TEST_STORAGE=s3 TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest $(S3_DB_TESTS)'
	$(MAKE) test-compose

# The platform as containers, end to end, sharing nothing but PostgreSQL and a bucket (Docker
# Engine and Compose installed when missing; images built from Debian's packages when the
# registry cannot be reached). Fails, never skips, when Docker cannot run here.
test-compose:
	bash scripts/test_compose.sh

start:
	bash scripts/start_all.sh

stop:
	bash scripts/stop_all.sh

clean:
	rm -rf $(VENV) frontend/node_modules
