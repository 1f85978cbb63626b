"""Serving: the HTTP service for one model (FastAPI app, micro-batching, uploads, schemas, the
page) and its model card. What scores images lives in :mod:`dermlearn.inference`; the web
service (``create_app``, ``serve``) is imported on first use so that nothing here loads FastAPI
until it is needed."""
from dermlearn.serving.model_card import build_model_card

__all__ = ["ServiceConfig", "build_model_card", "create_app", "serve"]


def __getattr__(name: str):
    if name == "create_app":
        from dermlearn.serving.app import create_app

        return create_app
    if name == "ServiceConfig":
        from dermlearn.serving.service import ServiceConfig

        return ServiceConfig
    if name == "serve":
        from dermlearn.serving.server import serve

        return serve
    raise AttributeError(f"module 'dermlearn.serving' has no attribute {name!r}")
