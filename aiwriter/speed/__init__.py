"""Speed modes, below the engine and above the model math (imports aiwriter.models and
aiwriter.errors only):

    quant.py         int8 Linears (fbgemm) and oneDNN-packed bf16 Linears
    fast_decode.py   FastDecoder: the lean one-token step of RWKV-4/7, bit-equal to the family's forward
    int4_blocks.py   4-bit block quantization, shared by the int4 mode and the ONNX export
    int4.py          the int4 CPU mode: 4-bit weights, onnxruntime for decoding, PyTorch for prompts
    onnx_export.py   one RNN step as an ONNX graph (float32, int8 or int4)
    onnx_runtime.py  OnnxNet: an exported step run by onnxruntime behind the family contract
"""
