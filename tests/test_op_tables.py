"""Knowledge about one op lives in several tables, each keyed by op name: the front end's
CONVERTERS (ONNX op -> IR), and per IR op its reach rule (RULES), shift rule (SHIFT_RULES),
builder (BUILDERS) and numpy reference (NUMPY_OPS). A new op must be in every one of them."""
import onnx

from reuserun import ir
from reuserun.frontend.converters import CONVERTERS
from reuserun.plan.rules import RULES
from reuserun.plan.shift import SHIFT_RULES
from reuserun.runtime.compiler import BUILDERS
from reuserun.runtime.numpy_ops import NUMPY_OPS


def test_every_ir_op_table_covers_exactly_the_ir_ops():
    for name, table in [("RULES", RULES), ("SHIFT_RULES", SHIFT_RULES), ("BUILDERS", BUILDERS),
                        ("NUMPY_OPS", NUMPY_OPS)]:
        assert set(table) == set(ir.OPS), (name, set(table) ^ set(ir.OPS))


def test_every_converter_is_for_an_onnx_op():
    unknown = [op for op in CONVERTERS if not onnx.defs.has(op)]
    assert not unknown
