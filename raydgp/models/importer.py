"""Models in: a built-in name, an ONNX file or a PyTorch factory, imported to a Relax module with its reference.

Accepted model arguments:

* a built-in name (:data:`raydgp.models.networks.BUILTIN`): ``resnet18``, ``mobilenet_v1``, ``vgg16``, ``alexnet``,
  ``tiny_cnn``;
* a path ending in ``.onnx`` (``tvm.relax.frontend.onnx``; the reference is ONNX Runtime);
* ``package.module:factory``: a Python callable returning a ``torch.nn.Module``, imported through ``torch.export``
  (needs ``input_shape``; the reference is PyTorch eager).

Weights are bound as constants, so later passes can fold batch norm into the convolutions and pick weight layouts.
Every failure is a :class:`~raydgp.errors.ModelError` with one line that says what is wrong.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from raydgp.errors import ModelError
from raydgp.tvm_loader import import_tvm


@dataclass
class ImportedModel:
    """A model ready for task extraction.

    Attributes:
        name: short name (file stem, factory name or built-in name).
        source: ``builtin``, ``onnx`` or ``torch``.
        mod: the Relax ``IRModule`` (weights bound as constants), not yet through raydgp's passes.
        inputs: example inputs by name, seeded (numpy arrays, the model's dtypes and shapes).
        reference: runs the source framework on a list of numpy inputs -> list of numpy outputs.
        reference_name: ``pytorch`` or ``onnxruntime``.
        torch_module: the eager PyTorch module (for timing), when the source is PyTorch.
    """

    name: str
    source: str
    mod: Any
    inputs: dict[str, np.ndarray]
    reference: Callable[[list[np.ndarray]], list[np.ndarray]]
    reference_name: str
    torch_module: Any = None
    extra: dict = field(default_factory=dict)


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"1,3,224,224"`` -> ``(1, 3, 224, 224)``."""
    if text is None or text == "":
        return None
    try:
        shape = tuple(int(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        raise ModelError(f"--input-shape {text!r}: expected comma-separated integers, e.g. 1,3,224,224") from None
    if not shape or any(v <= 0 for v in shape):
        raise ModelError(f"--input-shape {text!r}: every dimension must be a positive integer")
    return shape


def load_model(model: str, input_shape: tuple[int, ...] | None = None, seed: int = 0) -> ImportedModel:
    """Load and import a model (see the module docstring)."""
    from raydgp.models.networks import BUILTIN

    if not model:
        raise ModelError("no model given: pass a built-in name, an .onnx file or package.module:factory")
    if model in BUILTIN:
        factory, shape = BUILTIN[model]
        return _from_torch(model, "builtin", factory, input_shape or shape, seed)
    if model.lower().endswith(".onnx"):
        return _from_onnx(model, input_shape, seed)
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", model):
        modname, fname = model.split(":")
        try:
            factory = getattr(importlib.import_module(modname), fname)
        except ImportError as e:
            raise ModelError(f"model {model!r}: cannot import module {modname!r} ({e}); is it on PYTHONPATH?") from None
        except AttributeError:
            raise ModelError(f"model {model!r}: module {modname!r} has no attribute {fname!r}") from None
        if input_shape is None:
            raise ModelError(f"model {model!r}: a PyTorch factory needs --input-shape, e.g. 1,3,224,224")
        return _from_torch(fname, "torch", factory, input_shape, seed)
    if os.path.exists(model):
        raise ModelError(f"model file {model!r}: only .onnx files are accepted (or package.module:factory)")
    raise ModelError(f"unknown model {model!r}: use one of {', '.join(sorted(BUILTIN))}, a path to an .onnx file, "
                     "or package.module:factory with --input-shape")


def load_torch_module(model: str, input_shape: tuple[int, ...] | None = None, seed: int = 0):
    """The eager PyTorch module and example input of a built-in name or ``package.module:factory`` (no TVM)."""
    import torch

    from raydgp.models.networks import BUILTIN, seeded

    if model in BUILTIN:
        factory, shape = BUILTIN[model]
        module = seeded(factory(), seed)
        shape = input_shape or shape
    else:
        modname, fname = model.split(":")
        module = getattr(importlib.import_module(modname), fname)().eval()
        shape = input_shape
    return module, torch.from_numpy(_example_input(shape, seed))


def _example_input(shape, seed: int, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _from_torch(name: str, source: str, factory, shape, seed: int) -> ImportedModel:
    import torch

    from raydgp.models.networks import seeded

    try:
        module = factory()
    except Exception as e:  # noqa: BLE001 - user code: report it in one line
        raise ModelError(f"model {name!r}: the factory raised {type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"model {name!r}: the factory returned {type(module).__name__}, not a torch.nn.Module")
    module = seeded(module, seed) if source == "builtin" else module.eval()
    x = _example_input(shape, seed)
    tvm = import_tvm()
    from tvm.relax.frontend.torch import from_exported_program

    import logging

    tlog = logging.getLogger("torch")
    level = tlog.level
    tlog.setLevel(logging.CRITICAL)  # torch logs a failed export's internals at ERROR; the one line below says it
    try:
        with torch.no_grad():
            ep = torch.export.export(module, (torch.from_numpy(x),))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"model {name!r}: torch.export failed for input shape {tuple(shape)}: "
                         f"{type(e).__name__}: {_first_line(e)}") from None
    finally:
        tlog.setLevel(level)
    try:
        mod = from_exported_program(ep)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"model {name!r}: {_unsupported(e)}") from None

    def reference(arrays):
        with torch.no_grad():
            out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.detach().numpy() for o in outs]

    del tvm
    return ImportedModel(name=name, source=source, mod=mod, inputs={"x": x}, reference=reference,
                         reference_name="pytorch", torch_module=module)


def _from_onnx(path: str, input_shape, seed: int) -> ImportedModel:
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"ONNX file {path!r} not found")
    try:
        import onnx
    except ImportError:
        raise ModelError("ONNX input needs the onnx package: pip install onnx") from None
    try:
        proto = onnx.load(str(p))
        onnx.checker.check_model(proto)
    except Exception as e:  # noqa: BLE001 - truncated/corrupt protobuf
        raise ModelError(f"ONNX file {path!r} is not a valid ONNX model ({type(e).__name__}: {_first_line(e)})") \
            from None
    init_names = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in init_names]
    if not graph_inputs:
        raise ModelError(f"ONNX file {path!r} has no graph inputs")
    _NP = {1: np.float32, 7: np.int64, 6: np.int32, 10: np.float16, 11: np.float64}
    shapes, inputs = {}, {}
    for k, gi in enumerate(graph_inputs):
        tt = gi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if input_shape is not None and k == 0:
            dims = list(input_shape)
        if any(d is None or d <= 0 for d in dims):
            raise ModelError(f"ONNX input {gi.name!r} has a dynamic shape {dims}: pass --input-shape")
        dtype = _NP.get(tt.elem_type)
        if dtype is None:
            raise ModelError(f"ONNX input {gi.name!r} has an unsupported element type {tt.elem_type}")
        shapes[gi.name] = dims
        inputs[gi.name] = _example_input(dims, seed + k, dtype) if dtype in (np.float32, np.float16, np.float64) \
            else np.zeros(dims, dtype)
    import_tvm()
    from tvm.relax.frontend.onnx import from_onnx

    try:
        mod = from_onnx(proto, shape_dict=shapes, keep_params_in_input=False)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"ONNX file {path!r}: {_unsupported(e)}") from None
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError("ONNX input needs onnxruntime for the reference outputs: pip install onnxruntime") from None
    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    names = list(inputs)

    def reference(arrays):
        return [np.asarray(o) for o in sess.run(None, dict(zip(names, arrays)))]

    return ImportedModel(name=p.stem, source="onnx", mod=mod, inputs=inputs, reference=reference,
                         reference_name="onnxruntime", extra={"path": str(p)})


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _unsupported(e: BaseException) -> str:
    """One line for a frontend failure; names the operators when the frontend says which ones are missing."""
    msg = str(e)
    m = re.search(r"operators are not supported for frontend \w+:\s*([^\n]+)", msg)
    if m:
        return f"unsupported operator(s) {m.group(1).strip()}: not convertible by TVM's Relax frontend"
    m = re.search(r"[Uu]nsupported (?:function types|ops?|operators?)[:\s]*(\[[^\]]*\]|\S+)", msg)
    if m:
        return f"unsupported operator(s) {m.group(1)}: not convertible by TVM's Relax frontend"
    m = re.search(r"(?:Operator|op) ['\"]?([\w.:]+)['\"]? (?:is )?not (?:supported|implemented)", msg)
    if m:
        return f"unsupported operator {m.group(1)}: not convertible by TVM's Relax frontend"
    return f"import into TVM Relax failed: {type(e).__name__}: {_first_line(e)}"
