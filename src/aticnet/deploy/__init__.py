"""Deployment on CPUs: the engines a trained model runs on (PyTorch, ONNX Runtime, OpenVINO), int8
quantization, and the fast labels step that turns low-resolution logits into full-size labels.

* ``backends``: one runner per engine, the metadata every exported file carries.
* ``labels``: upsample-and-argmax, exact, computing the interpolation only at object boundaries.
* ``quantize``: post-training static int8 (NNCF + OpenVINO, or ONNX Runtime QDQ).

OpenVINO, NNCF and onnxruntime are optional (``pip install 'aticnet[deploy]'``), imported when used.
"""
