#!/usr/bin/env python3
"""Cold-start timing of the control-plane Lambda binary (called by bench/lambda).

For each handler, RUNS times: start the (stripped) binary as Lambda would, with
a Runtime API emulator serving one event, against moto; measure from process
start to its first `GET /invocation/next` (init) and to its response (init plus
first invoke, which includes the SDK set-up and the AWS calls). Prints a
Markdown table of medians and maxima, after the size table.

usage: lambda_cold_start.py --runs N BINARY STRIPPED ZIP
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(HERE, "..", "tests")
CLUSTER, SERVICE = "fluidity-bench", "fluidity-server-bench"

API_EVENT = {
    "resource": "/status", "path": "/status", "httpMethod": "GET", "headers": {}, "multiValueHeaders": {},
    "queryStringParameters": None, "pathParameters": None, "stageVariables": None,
    "requestContext": {"resourcePath": "/status", "httpMethod": "GET", "stage": "prod", "requestId": "r-1",
                       "accountId": "123456789012"},
    "body": None, "isBase64Encoded": False,
}
SCHEDULE_EVENT = {"version": "0", "id": "e-1", "detail-type": "Scheduled Event", "source": "aws.events",
                  "account": "123456789012", "time": "2026-11-22T23:00:00Z", "region": "us-east-1",
                  "resources": [], "detail": {}}


def api(method, path):
    return dict(API_EVENT, path=path, resource=path, httpMethod=method,
                requestContext=dict(API_EVENT["requestContext"], resourcePath=path, httpMethod=method))


EVENTS = {
    "status": api("GET", "/status"),
    "wake": api("POST", "/wake"),
    "kill": api("POST", "/kill"),
    "sleep": SCHEDULE_EVENT,
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(TESTS, "moto_launcher.py"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("moto did not start")


class Emulator:
    """One-event Runtime API: records when the runtime first asks, and when it answers."""

    def __init__(self, event):
        self.event, self.asked, self.answered, self.answer = event, None, None, None
        self.done = threading.Event()
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if emulator.asked is not None:  # only one event per run
                    emulator.done.wait(30)
                    self.send_response(410)
                    self.end_headers()
                    return
                emulator.asked = time.monotonic()
                body = json.dumps(emulator.event).encode()
                self.send_response(200)
                for k, v in {"lambda-runtime-aws-request-id": "bench-1",
                             "lambda-runtime-deadline-ms": str(int(time.time() * 1000) + 60000),
                             "lambda-runtime-invoked-function-arn": "arn:aws:lambda:us-east-1:123456789012:function:bench",
                             "content-length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                emulator.answer = self.rfile.read(length)
                emulator.answered = time.monotonic()
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()
                emulator.done.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def address(self):
        return "127.0.0.1:%d" % self.server.server_address[1]


def cold_start(binary, handler, moto_url):
    emulator = Emulator(EVENTS[handler])
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": emulator.address(), "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "_HANDLER": handler,
        "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_ENDPOINT_URL": moto_url,
        "CLUSTER_NAME": CLUSTER, "SERVICE_NAME": SERVICE, "IDLE_THRESHOLD_MINUTES": "15",
    }
    start = time.monotonic()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not emulator.done.wait(30):
            sys.exit(f"{handler}: no answer within 30 s")
        answer = json.loads(emulator.answer or b"null")
        status = answer.get("statusCode", 200) if isinstance(answer, dict) else None
        if status != 200 or "errorType" in answer:
            sys.exit(f"{handler}: unexpected answer {answer}")
        return (emulator.asked - start) * 1000, (emulator.answered - start) * 1000
    finally:
        proc.kill()
        proc.wait()
        emulator.server.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("binary")
    parser.add_argument("stripped")
    parser.add_argument("zip")
    args = parser.parse_args()

    moto, url = start_moto()
    try:
        subprocess.run([sys.executable, os.path.join(TESTS, "aws_fixture.py"), url, "setup", CLUSTER, SERVICE],
                       check=True, stdout=subprocess.DEVNULL)
        rows = []
        for handler in ["status", "wake", "kill", "sleep"]:
            runs = [cold_start(args.stripped, handler, url) for _ in range(args.runs)]
            init = [r[0] for r in runs]
            total = [r[1] for r in runs]
            rows.append((handler, statistics.median(init), max(init), statistics.median(total), max(total)))
    finally:
        moto.kill()
        moto.wait()

    mib = lambda path: os.path.getsize(path) / (1024 * 1024)
    print("| artifact | size |")
    print("|---|---:|")
    print(f"| release binary | {mib(args.binary):.2f} MiB |")
    print(f"| stripped (as packaged) | {mib(args.stripped):.2f} MiB |")
    print(f"| zip | {mib(args.zip):.2f} MiB |")
    print()
    print(f"| handler | init, median | init, max | init + first invoke, median | init + first invoke, max |")
    print("|---|---:|---:|---:|---:|")
    for handler, i_med, i_max, t_med, t_max in rows:
        print(f"| {handler} | {i_med:.1f} ms | {i_max:.1f} ms | {t_med:.1f} ms | {t_max:.1f} ms |")
    print(f"\n{args.runs} runs per handler; AWS calls go to moto on loopback, so network time to AWS is not included.")


if __name__ == "__main__":
    main()
