"""The host meters above the processes table, as htop and btop show them, in two lines of
any width (the daemon samples them: models.HostMeters):

    CPU [|||||||         23.4%] ▁▃█▂▁▁▂▇  8 cores
    Mem [|||||  3.1G/7.8G] Swp [  0B/2.0G] Load 0.52 0.40 0.31 Up 3d 4h

One block character per core (as many as fit, then `+N`), so a 128-core host still takes
one line; the bars take the width that the numbers leave.
"""

from __future__ import annotations

from daemoneye.models import HostMeters
from daemoneye.units import format_bytes, format_uptime

BLOCKS = "▁▂▃▄▅▆▇█"
LINES = 2  # the meters' height: fixed, so the table below never jumps


def bar(fraction: float, label: str, width: int) -> str:
    """`[|||||     label]` in `width` characters (at least the label and brackets): the
    share filled with `|`, the label right-aligned inside, as htop draws it."""
    inner = max(len(label), width - 2)
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * inner)
    cells = ["|" if i < filled else " " for i in range(inner)]
    start = inner - len(label)
    cells[start:] = list(label)
    return "[" + "".join(cells) + "]"


def core_blocks(cpu_percent: tuple[float, ...], width: int) -> str:
    """One block per core, its height its use (`▁` idle to `█` busy); `+N` for the cores
    that do not fit in `width`."""
    if width <= 0:
        return ""
    blocks = [BLOCKS[min(len(BLOCKS) - 1, max(0, int(p / 100 * len(BLOCKS))))] for p in cpu_percent]
    if len(blocks) <= width:
        return "".join(blocks)
    shown = max(0, width - len(f" +{len(blocks)}"))
    return "".join(blocks[:shown]) + f" +{len(blocks) - shown}"


def meter_lines(host: HostMeters | None, width: int, now: float) -> tuple[str, str]:
    """The two lines of the meters for a terminal `width` wide."""
    if host is None:
        return ("host meters: waiting for the daemon's first report", "")
    width = max(width, 20)
    cores = host.cpu_percent
    average = sum(cores) / len(cores) if cores else 0.0
    count = f"{len(cores)} core{'s' if len(cores) != 1 else ''}"
    cpu_bar_width = max(12, min(40, width // 3))
    cpu = f"CPU {bar(average / 100, f'{average:.1f}%', cpu_bar_width)} "
    room = width - len(cpu) - len(count) - 2
    first = f"{cpu}{core_blocks(cores, room)}  {count}" if room > 0 else cpu.rstrip()

    load = "Load " + " ".join(f"{value:.2f}" for value in host.load)
    up = f"Up {format_uptime(now - host.boot_time)}"
    memory_label = f"{format_bytes(host.memory_used)}/{format_bytes(host.memory_total)}"
    swap_label = f"{format_bytes(host.swap_used)}/{format_bytes(host.swap_total)}"
    fixed = len(load) + len(up) + len("Mem  Swp   ") + 3
    bar_width = max(len(memory_label) + 2, len(swap_label) + 2, min(40, (width - fixed) // 2))
    memory_share = host.memory_used / host.memory_total if host.memory_total else 0.0
    memory = bar(memory_share, memory_label, bar_width)
    swap_share = host.swap_used / host.swap_total if host.swap_total else 0.0
    swap = bar(swap_share, swap_label, bar_width)
    second = f"Mem {memory} Swp {swap} {load} {up}"
    if len(second) > width:  # narrow: the swap bar goes first, then the load
        second = f"Mem {memory} {load} {up}"
    if len(second) > width:
        second = f"Mem {memory} {up}"
    return first[:width], second[:width]
