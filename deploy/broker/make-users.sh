#!/bin/sh
# Make broker credentials: one user per device (its device id) and the server's user
# ("edgetune-server"), each with a random password.
#   OUT_DIR/passwd                the broker's password file (hashed, for mosquitto_passwd)
#   OUT_DIR/secrets/<user>.password   the plain password, mode 0600: copy each to its machine
#                                 (a device's [mqtt] password_file; the server's --mqtt-password-file)
#
# Usage: make-users.sh OUT_DIR DEVICE_ID...
# Users already in OUT_DIR/passwd keep their password; run again to add devices. To revoke a
# device: mosquitto_passwd -D OUT_DIR/passwd DEVICE_ID, then reload the broker (SIGHUP).
set -eu

[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR DEVICE_ID..." >&2; exit 2; }
out=$1
shift
server_user=edgetune-server
command -v mosquitto_passwd >/dev/null || {
    echo "$0: mosquitto_passwd is not installed (apt-get install mosquitto)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "$0: openssl is not installed (apt-get install openssl)" >&2; exit 1; }

for d in "$@"; do
    # The same rule as contract/topics.py check_device_id: it is a topic level and the ACL's %u.
    if ! printf '%s' "$d" | grep -Eqx '[A-Za-z0-9][A-Za-z0-9_.-]{0,63}' || [ "$d" = fleet ] \
            || [ "$d" = "$server_user" ] || [ "$(printf '%s' "$d" | wc -l)" -ne 0 ]; then
        echo "$0: device id '$d' is not allowed; expected 1-64 letters, digits, '_', '.', '-'," \
             "starting with a letter or digit, and not 'fleet' or '$server_user'" >&2
        exit 2
    fi
done

mkdir -p "$out/secrets"
umask 077
touch "$out/passwd"
for user in "$server_user" "$@"; do
    if grep -q "^$user:" "$out/passwd"; then
        continue
    fi
    password=$(openssl rand -hex 24)
    printf '%s\n' "$password" > "$out/secrets/$user.password"
    mosquitto_passwd -b "$out/passwd" "$user" "$password"
    echo "added broker user $user (password in $out/secrets/$user.password)"
done
