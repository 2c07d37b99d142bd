#!/bin/bash
# The container's health probe: GET /healthz on the HTTP port, with bash
# alone (the image has no curl). Port: CALLGATE_HTTP_PORT, else 7880; the
# HTTP listener must accept connections on 127.0.0.1 (http.bind 0.0.0.0 or
# 127.0.0.1).
set -euo pipefail
port="${CALLGATE_HTTP_PORT:-7880}"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
IFS= read -r status <&3
[[ "$status" == "HTTP/1.1 200 "* ]]
