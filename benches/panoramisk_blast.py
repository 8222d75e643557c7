"""The panoramisk side of `cargo bench --bench live -- blast`.

Connects to the bench's mock AMI server with panoramisk (the asyncio AMI library from
PyPI), logs in with events on, and counts every event through panoramisk's own dispatch
(one callback registered for "*"). Prints "connected" once the login was answered and
"done N" the moment the N-th event was dispatched; the bench times the run from its own
write to that line and reads this process's CPU time from /proc.

Usage: panoramisk_blast.py PORT EVENTS
"""

import asyncio
import sys

from panoramisk import Manager


async def main(port: int, total: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    logged_in = loop.create_future()
    seen = 0

    def on_event(_manager, _message):
        nonlocal seen
        seen += 1
        if seen >= total and not done.done():
            done.set_result(None)

    def on_login(_manager):
        if not logged_in.done():
            logged_in.set_result(None)

    manager = Manager(
        loop=loop,
        host="127.0.0.1",
        port=port,
        username="pbxlink",
        secret="bench-ami-secret",
        events="on",
        ping_delay=3600,
        ping_interval=3600,
        on_login=on_login,
    )
    manager.register_event("*", on_event)
    await manager.connect()
    await logged_in
    print("connected", flush=True)
    await done
    print(f"done {seen}", flush=True)
    manager.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
