# Developer commands. Each calls a script under scripts/, which works as well
# without make; `make help` lists them. The README's two commands
# (scripts/run, scripts/test) stay the way in.

.PHONY: help test test-fast test-e2e test-smoke test-list test-match bench profile-cpu changelog docs-serve

help:
	@echo "make test                    the whole gate: lint, types, dependency rules, every test with coverage, fuzz"
	@echo "make test-fast               lint, types, dependency rules and the unit tests (no sockets)"
	@echo "make test-e2e                the integration and regression tests (real daemons on loopback)"
	@echo "make test-smoke              a handful of end-to-end tests: receive, deliver, empathctl, sendmail"
	@echo "make test-list               list every test without running any"
	@echo "make test-match PATTERN=...  the tests whose names match (pytest -k)"
	@echo "make bench                   every benchmark, Empath beside Postfix (root; long)"
	@echo "make profile-cpu BENCH=...   py-spy flame graphs of Empath under one benchmark (accept, relay, ...)"
	@echo "make changelog               build/CHANGELOG.md from the git history (git-cliff)"
	@echo "make docs-serve              docs/ rendered on http://127.0.0.1:8000 while you edit (mkdocs)"

test:
	scripts/test

test-fast:
	scripts/test tests/unit

test-e2e:
	scripts/test tests/integration tests/regress

test-smoke:
	scripts/test -m smoke

test-list:
	scripts/bootstrap
	.venv/bin/python -m pytest --collect-only -q -m ""  # every test, the slow and fuzz ones too

test-match:
	@[ -n "$(PATTERN)" ] || { echo "usage: make test-match PATTERN=words" >&2; exit 2; }
	scripts/test -k "$(PATTERN)"

bench:
	scripts/bench/all

profile-cpu:
	@[ -n "$(BENCH)" ] || { echo "usage: make profile-cpu BENCH=accept|accept_large|relay|drain|latency" >&2; exit 2; }
	scripts/bench/profile $(BENCH)

changelog:
	@mkdir -p build
	scripts/tool git-cliff --config cliff.toml --output build/CHANGELOG.md
	@echo "changelog: build/CHANGELOG.md"

docs-serve:
	scripts/tool mkdocs serve
