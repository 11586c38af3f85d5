"""The shared service: an HTTP API and a reviewer web page over ``Facematch`` and the accounts module.

Beside ``cli`` in the layers: it calls the library only through ``facematch.api.Facematch`` and
``facematch.store.accounts``. Importing this package loads nothing heavy; ``facematch.service.app``
needs the ``service`` extra (FastAPI, uvicorn, python-multipart, Jinja2, argon2-cffi). docs/service.md.
"""

__all__: list[str] = []
