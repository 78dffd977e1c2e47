"""The offline demo: a small mirror shaped like the real origins, its JSONs and manifests."""
from vlmdata.demo.mirror import DemoFile, DemoMirror, build_demo_mirror  # noqa: F401
