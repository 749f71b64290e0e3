# The two commands a new user needs: `make demo` and `make test`.
# Both create .venv, install the project, and make sure Mosquitto is there
# (apt-get when run as root; otherwise they say what to install). `make test`
# also makes sure of what tests/interop builds and runs its third-party servers
# with (libmodbus, socat, a C compiler, Node.js and npm, RabbitMQ and ejabberd).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check-configs mosquitto thirdparty dist clean

demo: $(STAMP) mosquitto
	$(BIN)/edge-agent demo $(if $(DURATION),--duration $(DURATION))

# Soak tests (marker `soak`) poll for minutes and mostly wait: they run in a second
# pytest beside the rest, which keeps the whole suite within 25 minutes on two cores.
# Its output follows the main run's; exit code 5 means PYTEST_ARGS selected none of them.
test: $(STAMP) mosquitto thirdparty lint typecheck
	@$(BIN)/pytest -p no:cacheprovider -m soak $(PYTEST_ARGS) > .soak.log 2>&1 & soak=$$!; \
	$(BIN)/pytest -m "not soak" $(PYTEST_ARGS); rest=$$?; \
	wait $$soak; soaked=$$?; echo "--- soak tests (run beside the rest) ---"; cat .soak.log; \
	[ $$soaked -eq 5 ] && soaked=0; [ $$rest -eq 5 ] && rest=0; \
	exit $$(( rest || soaked ))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check-configs: $(STAMP)
	$(BIN)/edge-agent check config/*.yaml

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"' \
		|| { echo "edge-agent needs Python >= 3.11 (Debian 12: apt-get install python3)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv \
			&& $(PYTHON) -m venv $(VENV); \
		else echo "cannot create a venv: run 'sudo apt-get install python3-venv' and try again"; exit 1; fi; }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# The tests also make throw-away TLS certificates with the openssl command.
mosquitto:
	@{ command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } && command -v openssl >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Mosquitto and OpenSSL (apt-get install mosquitto openssl)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto openssl; \
		else \
			echo "Mosquitto and openssl are needed: run 'sudo apt-get install mosquitto openssl' and try again"; exit 1; \
		fi; }

# tests/interop compiles a Modbus server on libmodbus (C, found through pkg-config),
# joins pseudo-terminal pairs with socat, runs an OPC UA server on node-opcua
# (Node.js 18 or newer; npm installs node-opcua from tests/interop/opcua/package-lock.json),
# and runs RabbitMQ's MQTT plugin and ejabberd's mod_mqtt as private nodes on free ports.
# Debian starts a system ejabberd on install, whose configuration takes port 1883 (the
# system Mosquitto's): it is stopped and disabled straight after. The system RabbitMQ
# node is left running; the tests' node is another. The status page's browser test
# (tests/integration/test_status_page.py) drives Debian's headless Chromium through
# its chromedriver.
thirdparty:
	@{ pkg-config --exists libmodbus 2>/dev/null && command -v cc >/dev/null \
		&& command -v socat >/dev/null; } || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing libmodbus, socat and gcc (apt-get install libmodbus-dev socat pkg-config gcc)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				libmodbus-dev socat pkg-config gcc; \
		else \
			echo "tests/interop needs libmodbus, socat and a C compiler: run 'sudo apt-get install libmodbus-dev socat pkg-config gcc' and try again"; exit 1; \
		fi; }
	@{ command -v node >/dev/null && command -v npm >/dev/null; } || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Node.js and npm (apt-get install nodejs npm)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; \
		else \
			echo "tests/interop needs Node.js 18 or newer and npm: run 'sudo apt-get install nodejs npm' and try again"; exit 1; \
		fi; }
	@{ [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && [ -x /usr/sbin/ejabberdctl ]; } || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing RabbitMQ and ejabberd (apt-get install rabbitmq-server ejabberd)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				rabbitmq-server ejabberd || exit 1; \
			echo "stopping and disabling the system ejabberd (it would take port 1883)"; \
			if [ -d /run/systemd/system ]; then systemctl disable --now ejabberd; \
			else /etc/init.d/ejabberd stop >/dev/null && update-rc.d ejabberd disable >/dev/null; fi; \
		else \
			echo "tests/interop needs RabbitMQ and ejabberd: run 'sudo apt-get install rabbitmq-server ejabberd', then 'sudo systemctl disable --now ejabberd' (its configuration takes port 1883), and try again"; exit 1; \
		fi; }
	@{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Chromium and its driver (apt-get install chromium chromium-driver)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				chromium chromium-driver; \
		else \
			echo "the status page's browser test needs Chromium and its driver: run 'sudo apt-get install chromium chromium-driver' and try again"; exit 1; \
		fi; }

# The release tarball docs/operations.md starts from, with deploy/install.sh inside:
# the committed tree (HEAD, not uncommitted changes) as edge-agent-VERSION/ in
# $(DIST)/edge-agent-VERSION.tar.gz. The same commit always gives the same bytes.
DIST ?= dist
dist:
	@version=$$(git show HEAD:pyproject.toml | $(PYTHON) -c \
		'import sys, tomllib; print(tomllib.loads(sys.stdin.read())["project"]["version"])') \
	&& mkdir -p $(DIST) \
	&& git archive --format=tar.gz --prefix=edge-agent-$$version/ \
		-o $(DIST)/edge-agent-$$version.tar.gz HEAD \
	&& echo "$(DIST)/edge-agent-$$version.tar.gz: commit $$(git rev-parse --short HEAD)"
	@git diff --quiet HEAD || echo "(uncommitted changes are not in it)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .soak.log
