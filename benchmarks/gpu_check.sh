#!/usr/bin/env bash
# GPU check for lesson 05: run the AMP benchmark and execute the lesson's GPU path.
#
# Run from the repository root on a machine with an NVIDIA GPU:
#
#     OUT=/some/folder bash benchmarks/gpu_check.sh
#
# It writes, under "$OUT" (default: ./gpu_check_out):
#   env.txt                        nvidia-smi, Python, torch and package versions
#   amp_speed.txt / amp_speed.json the output of benchmarks/amp_speed.py
#   05_amp_training.gpu.ipynb      solutions/05_amp_training.ipynb executed on the GPU
#   05_amp_training.gpu.txt        that notebook's text outputs, cell by cell
#
# It installs nothing from the network. Python is "$PYTHON" if set, else the
# repository's .venv if its torch sees CUDA, else python3. If the notebook
# packages (nbclient, nbformat, ipykernel, matplotlib) are missing and "$WHEELS"
# names a folder of wheels, they are installed from there with --no-index;
# otherwise the notebook step is skipped with a message. Total time is capped
# at about 5 minutes (120 s for the benchmark, 150 s for the notebook).

set -u
cd "$(dirname "$0")/.." || exit 2
REPO="$(pwd)"
OUT="${OUT:-$REPO/gpu_check_out}"
mkdir -p "$OUT"
status=0

pick_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    if [ -x "$REPO/.venv/bin/python" ] && \
       "$REPO/.venv/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        echo "$REPO/.venv/bin/python"; return
    fi
    echo python3
}
PY="$(pick_python)"

{
    echo "== date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "== nvidia-smi"
    nvidia-smi 2>&1 || echo "(nvidia-smi not available)"
    echo "== python: $PY"
    "$PY" - <<'EOF' 2>&1
import platform, sys
print("Python", platform.python_version(), sys.executable)
try:
    import torch
    print("torch", torch.__version__, "| CUDA build", torch.version.cuda,
          "| cuda available:", torch.cuda.is_available())
    if torch.cuda.is_available():
        print("device:", torch.cuda.get_device_name(0), "| capability", torch.cuda.get_device_capability(0))
except Exception as exc:  # noqa: BLE001
    print("torch import failed:", exc)
for name in ("numpy", "matplotlib", "nbformat", "nbclient", "ipykernel"):
    try:
        module = __import__(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as exc:  # noqa: BLE001
        print(f"{name}: MISSING ({type(exc).__name__})")
EOF
} 2>&1 | tee "$OUT/env.txt"

echo "== benchmarks/amp_speed.py"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" timeout 120 "$PY" benchmarks/amp_speed.py --json "$OUT/amp_speed.json" 2>&1 | tee "$OUT/amp_speed.txt"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then echo "amp_speed.py exited with $rc" | tee -a "$OUT/amp_speed.txt"; status=1; fi

echo "== solutions/05_amp_training.ipynb on this machine"
missing="$("$PY" -c "
import importlib.util as u
print(' '.join(m for m in ('nbclient', 'nbformat', 'ipykernel', 'matplotlib', 'numpy') if u.find_spec(m) is None))" 2>/dev/null)"
if [ -n "$missing" ] && [ -n "${WHEELS:-}" ] && [ -d "${WHEELS}" ]; then
    echo "installing from local wheels in $WHEELS: $missing"
    "$PY" -m pip install --no-index --find-links "$WHEELS" $missing 2>&1 | tail -n 3
    missing="$("$PY" -c "
import importlib.util as u
print(' '.join(m for m in ('nbclient', 'nbformat', 'ipykernel', 'matplotlib', 'numpy') if u.find_spec(m) is None))" 2>/dev/null)"
fi
if [ -n "$missing" ]; then
    echo "SKIPPED: $PY lacks: $missing (set WHEELS=/folder/of/wheels, or PYTHON=a python that has them)" \
        | tee "$OUT/05_amp_training.gpu.txt"
    status=1
else
    KDIR="$(mktemp -d)"
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" JUPYTER_PATH="$KDIR" MPLBACKEND=Agg \
    timeout 150 "$PY" - "$REPO" "$OUT" "$KDIR" <<'EOF' 2>&1 | tee "$OUT/05_amp_training.gpu.txt"
import json, os, sys, time
import nbformat
from nbclient import NotebookClient

repo, out, kdir = sys.argv[1:4]
# A kernel spec that runs this very Python, so no other installed "python3" kernel is picked.
spec = os.path.join(kdir, "kernels", "mpcourse-gpu")
os.makedirs(spec, exist_ok=True)
with open(os.path.join(spec, "kernel.json"), "w") as fh:
    json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
               "display_name": "mp-course GPU check", "language": "python"}, fh)

source = os.path.join(repo, "solutions", "05_amp_training.ipynb")
target = os.path.join(out, "05_amp_training.gpu.ipynb")
nb = nbformat.read(source, as_version=4)
start = time.time()
error = None
try:
    NotebookClient(nb, timeout=120, kernel_name="mpcourse-gpu",
                   resources={"metadata": {"path": os.path.join(repo, "solutions")}}).execute()
except Exception as exc:  # noqa: BLE001 - the partial notebook is still written
    error = exc
nbformat.write(nb, target)
print(f"executed in {time.time() - start:.1f} s -> {target}")
for i, cell in enumerate(nb.cells):
    if cell.cell_type != "code":
        continue
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            print(f"--- cell {i} ({output.get('name')})\n{output.get('text', '').rstrip()}")
        elif output.get("output_type") == "error":
            print(f"--- cell {i} ERROR {output.get('ename')}: {output.get('evalue')}")
if error is not None:
    print(f"NOTEBOOK FAILED: {type(error).__name__}: {str(error)[-1500:]}")
    sys.exit(1)
EOF
    rc=${PIPESTATUS[0]}
    rm -rf "$KDIR"
    if [ "$rc" -ne 0 ]; then echo "notebook step exited with $rc"; status=1; fi
fi

echo "== done (status $status); files in $OUT:"
ls -l "$OUT"
exit "$status"
