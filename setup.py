"""Builds reuserun's native modules (Cython and C), with OpenMP when the compiler has it.

On x86-64 one build carries the modules three times, for the ISA levels x86-64 (SSE2), x86-64-v3
(AVX2, FMA) and x86-64-v4 (AVX-512), each in reuserun/_isa/<level>/; reuserun/isa.py loads the
best level the CPU has at import. Elsewhere, or with REUSERUN_ARCH set, one set is built for one
-march, in place beside the sources.

Environment switches:
  REUSERUN_ARCH=...        build one set for this -march (e.g. native: fastest on the build
                           machine, and a third of the build time); "none" omits the flag
  REUSERUN_NO_OPENMP=1     build serially even if OpenMP is available
  REUSERUN_CYTHON_CHECKS=1 turn Cython's bounds and wraparound checks back on (debugging)
"""
import os
import platform
import shutil
import sys
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# native modules by package: the kernels' arithmetic, the change marks and pixel planner that the
# plan owns, and the executor's loop and undo log that the runtime owns
NATIVE = {"kernels": ["base", "conv", "eltwise", "region", "info", "train"],
          "plan": ["marks", "planner"],
          "runtime": ["journal", "driver"]}
# the x86-64 levels one build carries (reuserun/isa.py chooses among them)
X86_LEVELS = ["x86-64", "x86-64-v3", "x86-64-v4"]


def _compiles(compiler, flags, code="int main(void){return 0;}\n", link_flags=()):
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=list(flags))
        compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=list(link_flags))
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        cc = self.compiler
        common = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-Wno-unused-function", "-Wno-psabi"]
        link_flags = []
        omp_code = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
        use_omp = os.environ.get("REUSERUN_NO_OPENMP") != "1" and _compiles(
            cc, ["-fopenmp"], omp_code, ["-fopenmp"])
        if use_omp:
            common.append("-fopenmp")
            link_flags.append("-fopenmp")
        else:
            warnings.warn("reuserun: OpenMP not available; kernels will run on one thread", stacklevel=2)
            print("reuserun: building WITHOUT OpenMP", file=sys.stderr)
        accepted = {}
        for ext in self.extensions:
            arch = ext.march
            if arch not in accepted:
                accepted[arch] = arch != "none" and _compiles(cc, [f"-march={arch}"])
                if not accepted[arch] and ext.name.startswith("reuserun._isa."):
                    raise RuntimeError(f"the compiler does not take -march={arch}; set REUSERUN_ARCH to "
                                       f"build one set for this machine")
            ext.extra_compile_args = common + ([f"-march={arch}"] if accepted[arch] else [])
            ext.extra_link_args = link_flags
            if self.inplace:  # a level's folder is no package: nothing else makes it
                os.makedirs(os.path.dirname(self.get_ext_fullpath(ext.name)), exist_ok=True)
        super().build_extensions()


def _extensions():
    checks = os.environ.get("REUSERUN_CYTHON_CHECKS") == "1"
    sources = [Extension(f"reuserun.{package}.{name}", [f"reuserun/{package}/{name}.pyx"],
                         include_dirs=["reuserun/kernels", np.get_include()])
               for package, names in NATIVE.items() for name in names]
    cythonized = cythonize(sources, language_level=3, compiler_directives={
        "boundscheck": checks, "wraparound": checks, "cdivision": True,
        "initializedcheck": checks, "nonecheck": False})
    arch = os.environ.get("REUSERUN_ARCH")
    if arch is not None or platform.machine().lower() not in ("x86_64", "amd64"):
        for ext in cythonized:
            ext.march = arch or "native"
        return cythonized
    # one copy of each generated C file per level, so each level's objects get their own paths
    out = []
    for level in X86_LEVELS:
        tag = level.replace("-", "_")
        for ext in cythonized:
            name = ext.name.rsplit(".", 1)[1]
            copy = os.path.join("build", "isa_src", tag, f"{name}.c")
            os.makedirs(os.path.dirname(copy), exist_ok=True)
            if not os.path.exists(copy) or os.path.getmtime(copy) < os.path.getmtime(ext.sources[0]):
                shutil.copyfile(ext.sources[0], copy)
            variant = Extension(f"reuserun._isa.{tag}.{name}", [copy], include_dirs=ext.include_dirs)
            variant.march = level
            out.append(variant)
    return out


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
