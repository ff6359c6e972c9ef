#!/usr/bin/env python3
"""Hold MB MiB of GPU memory until killed: the stand-in for a loaded model's weights.

Used by `fake-ollama --hold-vram-cmd 'exec python3 .../hold_vram.py {mb}'` on a
machine with a real GPU. It allocates on the visible CUDA device (pick the card
with CUDA_VISIBLE_DEVICES), touches every byte so the memory is really committed,
prints "ready" (fake-ollama completes the load only then) and sleeps until it
gets SIGTERM or SIGKILL. Exits non-zero, without printing "ready", if it cannot.
"""

import signal
import sys
import time


def main() -> int:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: hold_vram.py MB", file=sys.stderr)
        return 2
    mb = int(sys.argv[1])
    try:
        import torch
    except ImportError as e:
        print(f"hold_vram.py: PyTorch is not installed: {e}", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("hold_vram.py: no CUDA device is visible", file=sys.stderr)
        return 1
    try:
        held = torch.ones(mb * 1024 * 1024, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
    except RuntimeError as e:
        print(f"hold_vram.py: cannot allocate {mb} MiB: {e}", file=sys.stderr)
        return 1
    # SIGTERM is how fake-ollama unloads: exit at once, freeing the memory.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    while held is not None:
        time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
