#!/bin/sh
# Make the certificates the edgetune broker needs, with openssl:
#   ca.crt / ca.key          a private certificate authority (keep ca.key offline)
#   server.crt / server.key  the broker's certificate, signed by the CA, for the given host names
#   devices/<id>.crt / .key  optional client certificates (CN = the device id), for brokers that
#                            authenticate devices by certificate instead of by password
#
# Usage: make-certs.sh OUT_DIR [--host NAME_OR_IP]... [--device ID]... [--days N]
# The broker's certificate always covers localhost and 127.0.0.1. An existing CA in OUT_DIR is
# reused (so new device certificates chain to the one the fleet already trusts).
# Devices and the server need only ca.crt (their [mqtt.tls] ca_file / --mqtt-ca-file).
set -eu

usage() {
    echo "usage: $0 OUT_DIR [--host NAME_OR_IP]... [--device ID]... [--days N]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
out=$1
shift
hosts="localhost 127.0.0.1"
devices=""
days=825
while [ $# -gt 0 ]; do
    case $1 in
        --host) [ $# -ge 2 ] || usage; hosts="$hosts $2"; shift 2 ;;
        --device) [ $# -ge 2 ] || usage; devices="$devices $2"; shift 2 ;;
        --days) [ $# -ge 2 ] || usage; days=$2; shift 2 ;;
        *) echo "$0: unknown argument '$1'; expected --host, --device or --days" >&2; usage ;;
    esac
done
command -v openssl >/dev/null || { echo "$0: openssl is not installed (apt-get install openssl)" >&2; exit 1; }

mkdir -p "$out"
umask 077

if [ ! -f "$out/ca.key" ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 3650 \
        -subj "/CN=edgetune broker CA" -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
    echo "made the CA: $out/ca.crt"
fi

san=""
for h in $hosts; do
    case $h in
        *[!0-9.]*) entry="DNS:$h" ;;
        *) entry="IP:$h" ;;
    esac
    san="${san:+$san,}$entry"
done
cn_host=$(echo "$hosts" | awk '{print $NF}')  # the last --host given
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -subj "/CN=$cn_host" \
    -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san" > "$out/server.ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days "$days" -sha256 -extfile "$out/server.ext" -out "$out/server.crt" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext"
echo "made the broker's certificate for $san: $out/server.crt"

for d in $devices; do
    mkdir -p "$out/devices"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -subj "/CN=$d" \
        -keyout "$out/devices/$d.key" -out "$out/devices/$d.csr" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' > "$out/devices/$d.ext"
    openssl x509 -req -in "$out/devices/$d.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
        -days "$days" -sha256 -extfile "$out/devices/$d.ext" -out "$out/devices/$d.crt" 2>/dev/null
    rm -f "$out/devices/$d.csr" "$out/devices/$d.ext"
    echo "made a client certificate for device $d: $out/devices/$d.crt"
done
chmod 644 "$out/ca.crt" "$out/server.crt"
