#!/usr/bin/python3
"""Serves a video file over RTSP with GStreamer's RTSP server, paced at real
time, until killed. Used by the ingest tests as a real camera peer.

usage: rtsp_server.py PORT FILE.mp4 h264|h265 [USER:PASSWORD]   (stream at /cam)
With USER:PASSWORD, only that user may play it (basic authentication), as
cameras do. Prints "ready" once it listens.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, clip, codec = sys.argv[1], sys.argv[2], sys.argv[3]
parse, pay = {"h264": ("h264parse", "rtph264pay"), "h265": ("h265parse", "rtph265pay")}[codec]

factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( filesrc location={clip} ! qtdemux ! {parse} config-interval=-1 ! {pay} name=pay0 pt=96 )"
)
# A pipeline per client, each from the start of the clip. With one shared
# pipeline, a loaded CI runner once saw every DESCRIBE answered "503 Service
# Unavailable" for the rest of the run (the shared media had failed), which
# no camera does; separate pipelines cannot poison each other.
factory.set_shared(False)
server = GstRtspServer.RTSPServer()
server.set_service(port)
if len(sys.argv) > 4:
    user, password = sys.argv[4].split(":", 1)
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role("viewer", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
    permissions.add_permission_for_role("viewer", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    factory.set_permissions(permissions)
server.get_mount_points().add_factory("/cam", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on port {port}")
print("ready", flush=True)
GLib.MainLoop().run()
