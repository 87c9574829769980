"""Builds reuserun's Cython kernels, with OpenMP when the compiler has it.

Environment switches:
  REUSERUN_NO_OPENMP=1     build serially even if OpenMP is available
  REUSERUN_ARCH=...        -march value (default: native when the compiler accepts it; "none" to omit)
  REUSERUN_CYTHON_CHECKS=1 turn Cython's bounds and wraparound checks back on (debugging)
"""
import os
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
        compile_flags = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-Wno-unused-function"]
        link_flags = []
        arch = os.environ.get("REUSERUN_ARCH", "native")
        if arch != "none" and _compiles(cc, [f"-march={arch}"]):
            compile_flags.append(f"-march={arch}")
        omp_code = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
        use_omp = os.environ.get("REUSERUN_NO_OPENMP") != "1" and _compiles(
            cc, ["-fopenmp"], omp_code, ["-fopenmp"])
        if use_omp:
            compile_flags.append("-fopenmp")
            link_flags.append("-fopenmp")
        else:
            warnings.warn("reuserun: OpenMP not available; kernels will run on one thread", stacklevel=2)
            print("reuserun: building WITHOUT OpenMP", file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags
            ext.extra_link_args = link_flags
        super().build_extensions()


checks = os.environ.get("REUSERUN_CYTHON_CHECKS") == "1"
extensions = [
    Extension(f"reuserun.{package}.{name}", [f"reuserun/{package}/{name}.pyx"],
              include_dirs=["reuserun/kernels", np.get_include()])
    for package, names in NATIVE.items() for name in names
]
setup(
    ext_modules=cythonize(extensions, language_level=3, compiler_directives={
        "boundscheck": checks, "wraparound": checks, "cdivision": True,
        "initializedcheck": checks, "nonecheck": False}),
    cmdclass={"build_ext": BuildExt},
)
