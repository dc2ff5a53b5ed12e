#!/bin/bash
# GPU figures with TensorFlow on a lent machine that has no package index and CUDA 13 (see README,
# Performance, "NVIDIA H200"): bench/gpu_tf.py there, with TensorFlow 2.21 carried in parts.
# A user with a package index needs none of this: `pip install "tensorflow[and-cuda]==2.21.0"`.
#
# Prepared here (x86-64, any Python):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_27_x86_64 -d /tmp/tfw tensorflow==2.21.0
#   cd /tmp/tfw/x && unzip -q ../tensorflow-2.21.0-*.whl -x 'tensorflow/include/*'
#   find . -name '*.so*' -size +1M | xargs strip --strip-unneeded      # 1.9 GB -> 1.2 GB
#   tar -cf - tensorflow tensorflow-2.21.0.dist-info | xz -6 -T2 > ../tf.tar.xz   # 311 MB
#   split -b 65000000 -a 2 ../tf.tar.xz ../parts/part.          # one part per call (64 MiB each)
#   (cd ../parts && md5sum part.*) > .gpu/parts.md5
#   .whl/: keras namex optree astunparse gast google-pasta termcolor flatbuffers protobuf
#          ml_dtypes nvidia-cuda-runtime-cu12 (the README of the device tool: pip download ...)
#   .gpu/stubs/: empty libcufft.so.11, libcusolver.so.11, libcusparse.so.12
#                (gcc -shared -fPIC -o NAME -Wl,-soname,NAME empty.c)
# There: each call copies its part to /tmp/tfw; then `bash bench/gpu_tf_machine.sh check`
# (TensorFlow sees the GPU, a matmul and an XLA function run on it) and
# `bash bench/gpu_tf_machine.sh --json $OUT/gpu_tf.jsonl` (arguments go to bench/gpu_tf.py).
set -u
T=/tmp/tfw; S=/tmp/site; C=/tmp/cu12
if [ ! -e $S/tensorflow/libtensorflow_cc.so.2 ]; then
  mkdir -p $S
  (cd $T && md5sum -c $OLDPWD/.gpu/parts.md5) || { echo "parts differ"; exit 3; }
  XZ="xz -d -T0"; command -v xz >/dev/null || XZ="python3 -c 'import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer, 1<<22)'"
  t=$(date +%s); cat $T/part.* | eval $XZ | tar -x -C $S || { echo "unpack failed"; exit 3; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $S .whl/*.whl || exit 3
  echo "unpacked in $(( $(date +%s)-t )) s"
fi
find1() { find /opt /usr/local /usr/lib /usr/lib64 -name "$1" 2>/dev/null | head -1; }
mkdir -p $C; cp .gpu/stubs/* $C/
B=$(find1 'libcublas.so.13'); BL=$(find1 'libcublasLt.so.13'); D=$(find1 'libcudnn.so.9')
[ -n "$B" ] && ln -sf $B $C/libcublas.so.12; [ -n "$BL" ] && ln -sf $BL $C/libcublasLt.so.12
ROOT=/usr/local/cuda; P=$ROOT/bin/ptxas; LD=$ROOT/nvvm/libdevice/libdevice.10.bc
echo "cublas=$B cublasLt=$BL cudnn=$D ptxas=$P libdevice=$LD"
export PATH=$(dirname $P):$PATH
export LD_LIBRARY_PATH=$C:$S/nvidia/cuda_runtime/lib:$(dirname $D):$(dirname $B):${LD_LIBRARY_PATH:-}
export PYTHONPATH=$S XLA_FLAGS="--xla_gpu_cuda_data_dir=$ROOT" TF_FORCE_GPU_ALLOW_GROWTH=true
export CUDA_MODULE_LOADING=LAZY CUDA_CACHE_MAXSIZE=4294967296 TF_CPP_MIN_LOG_LEVEL=${TFLOG:-1}
python3 - <<'PY' || exit 4
import time; t = time.time()
import tensorflow as tf
print("TF", tf.__version__, tf.config.list_physical_devices("GPU"), f"{time.time()-t:.1f} s", flush=True)
a = tf.random.normal([2048, 2048])
print("matmul", float(tf.reduce_sum(tf.matmul(a, a))), tf.matmul(a, a).device, flush=True)
f = tf.function(lambda x: tf.nn.softmax(tf.matmul(x, x)), jit_compile=True)
print("xla", float(tf.reduce_sum(f(a))), f"{time.time()-t:.1f} s", flush=True)
PY
[ "${1:-}" = check ] && exit 0
PYTHONUNBUFFERED=1 python3 bench/gpu_tf.py "$@"
