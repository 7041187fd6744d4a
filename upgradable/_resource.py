# A twisted.web resource for paths where only an upgraded protocol makes sense.
from __future__ import annotations

from collections.abc import Iterable

from twisted.web.resource import Resource
from twisted.web.server import Request

from ._core import parseProduct, reasonPhrase

__all__ = ["UpgradeRequired"]


class UpgradeRequired(Resource):
    """
    A resource that answers ``426 Upgrade Required`` (RFC 9110 §15.5.22).

    Put it where only an upgraded protocol makes sense: a plain request gets
    426 with the acceptable products in ``Upgrade``, in order of preference,
    and ``Connection: Upgrade``; an upgrade request for one of them never
    reaches it because the channel switches first.

    :param products: the acceptable products, most preferred first.
    :param body: the response body.
    """

    isLeaf = True

    def __init__(self, products: Iterable[bytes], body: bytes = b"Upgrade Required\n") -> None:
        super().__init__()
        self.products = list(products)
        if not self.products:
            raise ValueError("UpgradeRequired needs at least one product")
        for product in self.products:
            if parseProduct(product) is None:
                raise ValueError(f"{product!r} is not a protocol product")
        self.body = body

    def render(self, request: Request) -> bytes:
        request.setResponseCode(426, reasonPhrase(426))
        request.setHeader(b"Upgrade", b", ".join(self.products))
        request.setHeader(b"Connection", b"Upgrade")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Content-Length", b"%d" % len(self.body))
        return self.body
