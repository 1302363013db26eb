# `helm test`: GET / through the router Service with a Service's Host header until the body holds the expected
# text or the deadline passes. Runs with the chart's own image (python, standard library only).
# Arguments: URL HOST EXPECTED TIMEOUT_SECONDS.
import sys
import time
import urllib.error
import urllib.request

url, host, expected, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
deadline = time.monotonic() + timeout
last = "no answer yet"
while True:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read().decode("utf-8", "replace")
            if expected in body:
                print(f"GET {url} Host: {host} -> {response.status}: {body.strip()}")
                sys.exit(0)
            last = f"{response.status} without {expected!r}: {body[:300]!r}"
    except urllib.error.HTTPError as error:
        last = f"{error.code}: {error.read()[:300].decode('utf-8', 'replace')!r}"
        if error.code == 404:
            last += " (is the Service applied? kubectl apply -f examples/helloworld-python/service.yaml)"
    except OSError as error:
        last = f"{type(error).__name__}: {error}"
    if time.monotonic() >= deadline:
        print(f"GET {url} Host: {host}: no {expected!r} after {timeout:g}s; last: {last}", file=sys.stderr)
        sys.exit(1)
    print(f"waiting: {last}", file=sys.stderr)
    time.sleep(2)
