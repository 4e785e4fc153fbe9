"""Build gpt2_engine._C: C11 host code from csrc/ plus, when nvcc is available,
CUDA kernels from kernels/ compiled by nvcc and linked with cudart, cuBLAS and NCCL.

Environment:
  GPT2_ENGINE_CUDA=0|1   force the CPU-only build (0) or require the CUDA build (1);
                         unset: CUDA when nvcc, cuBLAS and NCCL are all found.
  GPT2_ENGINE_DEBUG=1    -O0 -g with AddressSanitizer/UndefinedBehaviorSanitizer
                         (import under LD_PRELOAD=$(gcc -print-file-name=libasan.so)).
  GPT2_ENGINE_CUDA_ARCHS "80;86;89;90" by default (+ PTX of the newest); sm_90a is
                         added for kernels/*_sm90a.cu only.
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("GPT2_ENGINE_DEBUG") == "1"


def log(msg):
    print(f"[gpt2_engine build] {msg}", file=sys.stderr)


def site_dirs():
    """Every site-packages dir we can see (PyPI's nvidia-* wheels live there)."""
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    try:
        import site
        dirs.update(site.getsitepackages())
        dirs.add(site.getusersitepackages())
    except Exception:
        pass
    return [d for d in dirs if d and os.path.isdir(d)]


def find_header(name, extra=()):
    roots = list(extra) + ["/usr/local/cuda/include", "/usr/include",
                           "/usr/include/x86_64-linux-gnu", "/usr/include/openblas",
                           "/usr/include/aarch64-linux-gnu"]
    for sp in site_dirs():
        roots += glob.glob(os.path.join(sp, "nvidia", "*", "include"))
        roots += glob.glob(os.path.join(sp, "nvidia", "*", "*", "include"))
    for r in roots:
        if os.path.isfile(os.path.join(r, name)):
            return r
    return None


def find_library(stem, extra=()):
    """Directory holding lib<stem>.so or lib<stem>.so.N (wheels ship only .so.N)."""
    roots = list(extra) + ["/usr/local/cuda/lib64", "/usr/local/cuda/lib64/stubs",
                           "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib",
                           "/usr/lib/aarch64-linux-gnu"]
    for sp in site_dirs():
        roots += glob.glob(os.path.join(sp, "nvidia", "*", "lib"))
        roots += glob.glob(os.path.join(sp, "nvidia", "*", "*", "lib"))
    for r in roots:
        hits = sorted(glob.glob(os.path.join(r, f"lib{stem}.so*")))
        if hits:
            return r, hits
    return None, []


def link_arg(stem, libdir, hits):
    """-l<stem> when lib<stem>.so exists, else the full path of the versioned file."""
    plain = os.path.join(libdir, f"lib{stem}.so")
    return f"-l{stem}" if os.path.exists(plain) else f"-l:{os.path.basename(hits[0])}"


def cuda_config():
    want = os.environ.get("GPT2_ENGINE_CUDA")
    if want == "0":
        log("GPT2_ENGINE_CUDA=0: building the CPU-only engine")
        return None
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc"
                                    if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    missing = []
    if not nvcc:
        missing.append("nvcc")
    incs, libdirs, link = [], [], []
    for header in ("cuda_runtime.h", "cublas_v2.h", "cublasLt.h", "nccl.h"):
        d = find_header(header)
        if d is None:
            missing.append(header)
        elif d not in incs:
            incs.append(d)
    for stem in ("cudart", "cublas", "cublasLt", "nccl"):
        d, hits = find_library(stem)
        if d is None:
            missing.append(f"lib{stem}.so")
            continue
        if d not in libdirs:
            libdirs.append(d)
        link.append(link_arg(stem, d, hits))
    if missing:
        msg = "CUDA build not possible, missing: " + ", ".join(missing)
        if want == "1":
            raise SystemExit(msg + " (GPT2_ENGINE_CUDA=1 was set)")
        log(msg + " -> building the CPU-only engine")
        return None
    log(f"CUDA build: nvcc={nvcc}, include={incs}, libs={libdirs}")
    return {"nvcc": nvcc, "include": incs, "libdirs": libdirs, "link": link}


def blas_config():
    inc = find_header("cblas.h")
    libdir, hits = find_library("openblas")
    if inc is None or libdir is None:
        raise SystemExit("CBLAS not found: install OpenBLAS (Debian: apt-get install "
                         "libopenblas-dev); `make test` does this for you")
    return inc, libdir, link_arg("openblas", libdir, hits)


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def build_extension(self, ext):
        if CUDA:
            ext.extra_objects += self.compile_cuda(CUDA)
            # relink when the kernel defines changed since the last build (its objects differ)
            stamp = os.path.join(self.build_temp, "cuda_defines")
            want = os.environ.get("GPT2_ENGINE_CUDA_DEFINES", "")
            have = open(stamp).read() if os.path.exists(stamp) else ""
            if want != have:
                self.force = True
                with open(stamp, "w") as f:
                    f.write(want)
        super().build_extension(ext)

    def compile_cuda(self, cuda):
        archs = os.environ.get("GPT2_ENGINE_CUDA_ARCHS", "80;86;89;90").split(";")
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
        # GPT2_ENGINE_CUDA_DEFINES="GEMV_PF1=12;GEMV_BLOCKS_PER_SM=2": kernel tuning knobs for a
        # measuring build (integer values: nvcc splits -D at commas); their objects go to a
        # folder of their own, so switching back recompiles no kernel (the extension is
        # relinked: build_extension)
        defines = [d for d in os.environ.get("GPT2_ENGINE_CUDA_DEFINES", "").split(";") if d]
        objdir = os.path.join(self.build_temp, "kernels")
        if defines:
            import hashlib
            objdir += "-" + hashlib.sha1(";".join(defines).encode()).hexdigest()[:8]
            log("kernel defines: " + " ".join(defines))
        os.makedirs(objdir, exist_ok=True)
        headers = glob.glob(os.path.join(ROOT, "kernels", "*.h")) + \
            glob.glob(os.path.join(ROOT, "kernels", "*.cuh"))
        newest_header = max((os.path.getmtime(h) for h in headers), default=0)
        jobs = []
        for src in sorted(glob.glob(os.path.join(ROOT, "kernels", "*.cu"))):
            obj = os.path.join(objdir, os.path.basename(src) + ".o")
            codes = ["-gencode=arch=compute_90a,code=sm_90a"] if src.endswith("_sm90a.cu") \
                else gencode
            if src.endswith(("decode_fused.cu", "decode_layer.cu")) and \
                    any(a.isdigit() and int(a) >= 90 for a in archs):
                # clusters (decode_layer) / only measured on Hopper (decode_fused): sm_90 + PTX
                codes = ["-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_90,code=compute_90"]
            cmd = [cuda["nvcc"], "-c", src, "-o", obj, "-std=c++17", "-Xcompiler", "-fPIC",
                   "-I" + os.path.join(ROOT, "kernels"), "-I" + os.path.join(ROOT, "csrc", "core"),
                   "--expt-relaxed-constexpr", "--threads", "0", "-Xcompiler", "-Wall",
                   "-Werror=all-warnings"]
            cmd += ["-O0", "-g", "-lineinfo"] if DEBUG else ["-O3", "-lineinfo"]
            cmd += codes + [f"-I{d}" for d in cuda["include"]] + [f"-D{d}" for d in defines]
            stale = not os.path.exists(obj) or \
                os.path.getmtime(obj) < max(os.path.getmtime(src), newest_header)
            jobs.append((cmd, obj, stale))

        def run(job):
            cmd, obj, stale = job
            if stale:
                log("nvcc " + os.path.basename(obj)[:-2])
                subprocess.check_call(cmd)
            return obj

        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            return list(pool.map(run, jobs))


def make_extension(cuda):
    blas_inc, blas_libdir, blas_link = blas_config()
    import numpy
    sources = sorted(glob.glob("csrc/core/*.c") + glob.glob("csrc/python/*.c"))
    if not cuda:
        sources = [s for s in sources if not s.endswith("_cuda.c")]
    cflags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE",
              "-Wno-missing-field-initializers", "-Wno-format-truncation", "-fvisibility=hidden"]
    ldflags = [f"-L{blas_libdir}", blas_link, "-lm", "-lpthread"]
    if DEBUG:
        cflags += ["-O0", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        ldflags += ["-fsanitize=address,undefined"]
    else:
        cflags += ["-O3", "-march=x86-64-v2" if os.uname().machine == "x86_64" else "-O3"]
    incs = ["csrc/core", "csrc/python", "kernels", numpy.get_include(), blas_inc]
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_20_API_VERSION")]
    if cuda:
        macros.append(("GPT2_ENGINE_HAVE_CUDA", "1"))
        incs += cuda["include"]
        for d in cuda["libdirs"]:
            ldflags += [f"-L{d}", f"-Wl,-rpath,{d}"]
        ldflags += cuda["link"] + ["-lstdc++"]
    return Extension("gpt2_engine._C", sources=sources, include_dirs=incs,
                     define_macros=macros, extra_compile_args=cflags,
                     extra_link_args=ldflags)


CUDA = cuda_config()
setup(ext_modules=[make_extension(CUDA)], cmdclass={"build_ext": BuildExt})
