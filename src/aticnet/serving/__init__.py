"""Serving models to other programs: ``aticnet serve`` (an Open Inference Protocol v2 server on KServe's model
server, batching on Ray Serve) and batch prediction on Ray Data (``aticnet predict --ray``).

The heavy libraries (kserve, ray) are imported by the modules that use them, not here.
"""
