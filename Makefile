# Two commands do all set-up on a fresh machine:  `make demo` (the main job) and `make test`.
# The virtual environment is created on first use and refreshed when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean serve

install: $(STAMP)

# face_recognition pins `dlib`, whose source build takes ~15 minutes: it is installed with --no-deps,
# and its real needs (dlib via the prebuilt dlib-bin wheel, face_recognition_models, Click, Pillow,
# numpy) come from pyproject.toml.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,report,dask,service]'
	$(BIN)/python -m pip install --quiet --no-deps face_recognition==1.3.0
	$(BIN)/python -c "import dlib, face_recognition_models, faiss, cv2; print('facematch environment ready')"
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium) \
		|| echo "chromium could not be installed: the browser test will skip"
	touch $(STAMP)

# the demo's bands come from the dev calibration committed in docs/ (docs/evaluation.md)
demo: $(STAMP)
	FACEMATCH_CALIBRATION=docs/calibration-dev.json $(BIN)/facematch --data-dir facematch-data/demo demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) facematch-data indexes/*/ .pytest_cache

# the shared service on the demo catalogue: agencies north/south, demo users (password printed), the demo
# gallery in north-custody; then http://127.0.0.1:8000/ (docs/service.md)
serve: $(STAMP)
	FACEMATCH_CALIBRATION=docs/calibration-dev.json $(BIN)/python scripts/service_demo.py facematch-data/service
	FACEMATCH_CALIBRATION=docs/calibration-dev.json $(BIN)/facematch --data-dir facematch-data/service serve
