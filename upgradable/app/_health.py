# The health check a load balancer polls: a plain GET that never upgrades.
from __future__ import annotations

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

__all__ = ["HealthCheck", "WithHealthCheck"]


class HealthCheck(Resource):
    """
    ``200 ok`` while the site serves, ``503 draining`` once it is stopping
    (see :meth:`upgradable.UpgradableSite.drain`), so that a proxy sends new
    connections elsewhere.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        if getattr(request.site, "draining", False):
            request.setResponseCode(503)
            request.setHeader(b"Retry-After", b"5")
            return b"draining\n"
        return b"ok\n"

    render_HEAD = render_GET


class WithHealthCheck(Resource):
    """
    Serves :class:`HealthCheck` at ``/<name>`` and everything else from
    ``resource``, exactly as if ``resource`` were the root (a leaf one
    included, such as the welcome page).
    """

    def __init__(self, resource: IResource, name: bytes) -> None:
        super().__init__()
        self.resource = resource
        self.name = name
        self.health = HealthCheck()

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        if path == self.name and not request.postpath:
            return self.health
        # Not ours: put the segment back and let the wrapped root resolve it.
        assert request.prepath is not None and request.postpath is not None
        request.postpath.insert(0, request.prepath.pop())
        return self.resource

    def render(self, request: Request) -> bytes | int:
        return self.resource.render(request)  # type: ignore[no-any-return]
