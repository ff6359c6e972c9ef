#!/usr/bin/env python3
"""Turns a terminal screen saved as ANSI text (`tmux capture-pane -e -p`, or the
TestBackend dump of tests/top.rs) into one HTML page that looks like the terminal:
a dark background, a monospace font, the 16 colours, 256-colour and RGB escapes,
bold and reverse. Only SGR escapes (ESC [ ... m) are understood; others are dropped.

    scripts/ansi2html.py SCREEN.ans [TITLE] > screen.html
"""

import html
import re
import sys

BASE = ["#1d1f21", "#cc6666", "#8fbf5f", "#e5c07b", "#61afef", "#c678dd", "#56b6c2", "#c5c8c6"]
BRIGHT = ["#666666", "#ff7b7b", "#b5e890", "#ffe08a", "#8cc4ff", "#e3a5ff", "#8fe3ec", "#ffffff"]
FG, BG = "#c5c8c6", "#1d1f21"


def color256(n):
    """The colour of a 256-colour index."""
    if n < 8:
        return BASE[n]
    if n < 16:
        return BRIGHT[n - 8]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        r, g, b = steps[n // 36], steps[(n // 6) % 6], steps[n % 6]
        return f"#{r:02x}{g:02x}{b:02x}"
    v = 8 + (n - 232) * 10
    return f"#{v:02x}{v:02x}{v:02x}"


def apply(state, params):
    """Applies one SGR escape's parameters to the style state."""
    codes = [int(p) if p else 0 for p in params.split(";")] if params else [0]
    i = 0
    while i < len(codes):
        c = codes[i]
        if c == 0:
            state.clear()
        elif c == 1:
            state["bold"] = True
        elif c == 22:
            state.pop("bold", None)
        elif c == 7:
            state["reverse"] = True
        elif c == 27:
            state.pop("reverse", None)
        elif 30 <= c <= 37:
            state["fg"] = BASE[c - 30]
        elif 90 <= c <= 97:
            state["fg"] = BRIGHT[c - 90]
        elif 40 <= c <= 47:
            state["bg"] = BASE[c - 40]
        elif 100 <= c <= 107:
            state["bg"] = BRIGHT[c - 100]
        elif c == 39:
            state.pop("fg", None)
        elif c == 49:
            state.pop("bg", None)
        elif c in (38, 48) and i + 1 < len(codes):
            key = "fg" if c == 38 else "bg"
            if codes[i + 1] == 5 and i + 2 < len(codes):
                state[key] = color256(codes[i + 2])
                i += 2
            elif codes[i + 1] == 2 and i + 4 < len(codes):
                r, g, b = codes[i + 2 : i + 5]
                state[key] = f"#{r:02x}{g:02x}{b:02x}"
                i += 4
        i += 1


def style_of(state):
    fg, bg = state.get("fg", FG), state.get("bg", BG)
    if state.get("reverse"):
        fg, bg = bg, fg
    css = f"color:{fg};background:{bg}"
    if state.get("bold"):
        css += ";font-weight:bold"
    return css


def convert(text):
    """The screen's HTML: one span per run of cells of one style."""
    out, state = [], {}
    for part in re.split(r"(\x1b\[[0-9;]*[A-Za-z])", text):
        if part.startswith("\x1b["):
            if part.endswith("m"):
                apply(state, part[2:-1])
            continue
        if part:
            out.append(f'<span style="{style_of(state)}">{html.escape(part)}</span>')
    return "".join(out)


def main():
    src = sys.argv[1]
    title = sys.argv[2] if len(sys.argv) > 2 else src
    with open(src, encoding="utf-8") as f:
        body = convert(f.read().rstrip("\n"))
    print(
        f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{margin:0;background:{BG}}}
pre{{margin:0;padding:8px;font:15px/1.2 "DejaVu Sans Mono",monospace;color:{FG};background:{BG}}}</style>
</head><body><pre>{body}</pre></body></html>"""
    )


if __name__ == "__main__":
    main()
