#!/usr/bin/env python3
"""Continuous HTTP load for the service-networking tests: GET / with a Host header
against each URL in turn, over one keep-alive connection per URL, until the stop file
exists. Prints one JSON line: requests, failures (with the first few reasons), and the
count of each answer's first word (the version that answered)."""
import http.client, json, os, sys, time, urllib.parse

def main():
    host, stop, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
    conns = {}
    requests = failures = 0
    reasons, answers, by_url = [], {}, {}
    i = 0
    while not os.path.exists(stop):
        url = urls[i % len(urls)]
        i += 1
        u = urllib.parse.urlsplit(url)
        try:
            c = conns.get(url)
            if c is None:
                c = conns[url] = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=5)
            c.request("GET", u.path or "/", headers={"Host": host})
            r = c.getresponse()
            body = r.read().decode("utf-8", "replace")
            requests += 1
            if r.status != 200:
                failures += 1
                reasons.append(f"{url}: {r.status} {body.strip()[:120]}")
            else:
                word = body.split()[0] if body.split() else ""
                answers[word] = answers.get(word, 0) + 1
                by_url[url] = by_url.get(url, 0) + 1
        except Exception as e:  # a failed request, whatever failed
            requests += 1
            failures += 1
            reasons.append(f"{url}: {type(e).__name__}: {e}")
            conns.pop(url, None)
            time.sleep(0.01)
    print(json.dumps({"requests": requests, "failures": failures,
                      "reasons": reasons[:10], "answers": answers, "by_url": by_url}))

main()
