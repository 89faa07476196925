#!/usr/bin/python3
"""A small HTTP camera peer for the ingest tests, until killed.

usage: http_server.py DIR
Serves the files in DIR (progressive MP4, HLS playlists and segments) and,
at /mjpeg, the JPEGs in DIR/jpeg looped forever as a multipart MJPEG stream
at 10 frames/s, the way IP cameras serve it. Prints the port once it listens.
Each request's path and User-Agent go to DIR/requests.log.
"""
import http.server
import os
import sys
import time

root = sys.argv[1]
jpegs = sorted(os.path.join(root, "jpeg", f) for f in os.listdir(os.path.join(root, "jpeg")))
frames = [open(p, "rb").read() for p in jpegs]


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)

    def log_message(self, *args):
        pass

    def do_GET(self):
        with open(os.path.join(root, "requests.log"), "a") as log:
            log.write("%s %s\n" % (self.path, self.headers.get("User-Agent")))
        if self.path != "/mjpeg":
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace;boundary=frame")
        self.end_headers()
        try:
            i = 0
            while True:
                jpeg = frames[i % len(frames)]
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                self.wfile.write(b"Content-Length: %d\r\n\r\n" % len(jpeg))
                self.wfile.write(jpeg + b"\r\n")
                self.wfile.flush()
                i += 1
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
