"""Architecture drawings people can read: SVG (and a standalone HTML page around it).

One row per feature level (L0, the image, at the top; stride 2**level), blocks left to right in
dependency order, coloured by kind, each labelled with its kind, output channels, kernel and dilation.
Edges between rows are resampling and are drawn dashed with their factor (``↓4`` for a map four
times smaller, ``↑2`` for nearest upsampling); edges inside a row are plain. Outputs have a bold
border and their name.

Columns are assigned by dependencies, not by execution order alone: a block goes into the first
column after all its inputs and after the previous block of its row, so a scale-permuted graph
(SpineNet) stays compact while every edge still points right. Runs of identical consecutive blocks
in a chain (a ResNet stage: same kind, width and kernel) collapse into one box marked ``×n``;
per-block dilations of a run
(CR-NAS) are listed on it.

No graphviz binary and no JavaScript: the SVG is plain text, so it inlines into the search report
and opens in any browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from archspec.compiler.graph import Graph
from archspec.compiler.ops import Conv
from archspec.compiler.render import block_graph

KIND_COLORS = {
    "input": "#cfd8dc", "conv": "#90a4ae", "max_pool": "#b0bec5",
    "bottleneck": "#64b5f6", "basic": "#81c784", "inverted_residual": "#ffb74d",
    "shufflenet_v2": "#ba68c8", "shuffle_xception": "#f06292", "k1kx": "#4db6ac", "k1kxk1": "#4dd0e1",
}
"""Fill colour per block kind; kinds not listed take `SPARE_COLORS` in order of appearance."""
SPARE_COLORS = ("#dce775", "#a1887f", "#ff8a65", "#9575cd", "#aed581", "#7986cb")

BOX_WIDTH, BOX_HEIGHT = 112, 50
COLUMN_GAP, ROW_GAP = 30, 34
LEFT, TOP = 92, 34
DOWN_COLOR, UP_COLOR, SAME_COLOR = "#c62828", "#1565c0", "#78909c"


@dataclass
class Box:
    """One drawn box: a block, or a collapsed run of identical consecutive blocks."""

    names: list[str]
    kind: str
    level: int
    channels: int
    kernel: int
    """Largest kernel of the block's convolutions (1: none is spatial)."""
    dilations: list[int]
    outputs: list[str] = field(default_factory=list)
    column: int = 0

    @property
    def title(self) -> str:
        first, last = self.names[0], self.names[-1]
        if len(self.names) == 1:
            return first
        # stage1.block0 .. stage1.block3 -> stage1.block0–3
        stem = first.rstrip("0123456789")
        if last.startswith(stem) and last[len(stem):].isdigit():
            return f"{first}–{last[len(stem):]}"
        return f"{first}–{last}"

    @property
    def dilation_text(self) -> str:
        distinct = sorted(set(self.dilations))
        if distinct == [1] or not distinct:
            return ""
        if len(distinct) == 1:
            return f"d{distinct[0]}"
        return "d " + ",".join(map(str, self.dilations))


def _block_convs(graph: Graph) -> dict[str, tuple[int, int]]:
    """Block name -> (largest kernel, largest dilation) of its convolutions ((1, 1) without any)."""
    found: dict[str, tuple[int, int]] = {}
    for name, op in graph.nx.nodes(data="op"):
        block = graph.nx.nodes[name]["block"]
        kernel, dilation = found.get(block, (1, 1))
        if isinstance(op, Conv):
            kernel, dilation = max(kernel, op.kernel), max(dilation, op.dilation)
        found[block] = (kernel, dilation)
    return found


def layout(graph: Graph, collapse: bool = True) -> tuple[list[Box], list[tuple[int, int]]]:
    """Boxes (with columns) and the edges between them (box indices)."""
    blocks = block_graph(graph)
    convs = _block_convs(graph)
    order = sorted(blocks.nodes, key=lambda n: blocks.nodes[n]["order"])
    boxes: list[Box] = []
    box_of: dict[str, int] = {}
    for name in order:
        data = blocks.nodes[name]
        preds = list(blocks.predecessors(name))
        last = boxes[-1] if boxes else None
        if (collapse and last is not None and preds == [last.names[-1]] and not last.outputs
                and blocks.out_degree(last.names[-1]) == 1 and last.kind == data["kind"]
                and last.level == data["level"] and last.channels == data["channels"] and data["kind"] != "input"
                and last.kernel == convs.get(name, (1, 1))[0]):
            last.names.append(name)
            last.dilations.append(convs.get(name, (1, 1))[1])
            last.outputs = list(data.get("outputs", []))
            box_of[name] = len(boxes) - 1
            continue
        box_of[name] = len(boxes)
        kernel, dilation = convs.get(name, (1, 1))
        boxes.append(Box([name], data["kind"], data["level"], data["channels"], kernel, [dilation],
                         list(data.get("outputs", []))))
    edges = sorted({(box_of[u], box_of[v]) for u, v in blocks.edges if box_of[u] != box_of[v]})
    inputs: dict[int, list[int]] = {}
    for u, v in edges:
        inputs.setdefault(v, []).append(u)
    row_end: dict[int, int] = {}
    for index, box in enumerate(boxes):
        column = max([boxes[u].column + 1 for u in inputs.get(index, [])] + [row_end.get(box.level, -1) + 1, 0])
        box.column = column
        row_end[box.level] = column
    return boxes, edges


def kind_colors(kinds) -> dict[str, str]:
    spare = iter(SPARE_COLORS * 4)
    return {kind: KIND_COLORS.get(kind) or next(spare) for kind in kinds}


def to_svg(graph: Graph, *, collapse: bool = True, title: str | None = None, ids: str = "archspec") -> str:
    """The drawing as an SVG document (UTF-8 text; width and height in pixels, with a viewBox so
    it scales). `ids` prefixes the element ids, so several drawings can share one page."""
    boxes, edges = layout(graph, collapse)
    levels = sorted({box.level for box in boxes})
    row_of = {level: i for i, level in enumerate(levels)}
    columns = max(box.column for box in boxes) + 1
    colors = kind_colors(dict.fromkeys(box.kind for box in boxes))
    legend_y = TOP + len(levels) * (BOX_HEIGHT + ROW_GAP) + 8
    width = LEFT + columns * (BOX_WIDTH + COLUMN_GAP) + 10
    height = legend_y + 44

    def x_of(box: Box) -> float:
        return LEFT + box.column * (BOX_WIDTH + COLUMN_GAP)

    def y_of(box: Box) -> float:
        return TOP + row_of[box.level] * (BOX_HEIGHT + ROW_GAP)

    name = title if title is not None else graph.name
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="archspec-drawing" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" role="img" '
           f'aria-label="{escape(name)}">',
           "<defs>" + "".join(
               f'<marker id="{ids}-arrow-{key}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
               f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{color}"/></marker>'
               for key, color in (("down", DOWN_COLOR), ("up", UP_COLOR), ("same", SAME_COLOR))) + "</defs>",
           f'<text x="8" y="20" font-size="14" font-weight="bold">{escape(name)}</text>']
    for level in levels:
        y = TOP + row_of[level] * (BOX_HEIGHT + ROW_GAP)
        out.append(f'<rect x="0" y="{y - ROW_GAP / 2 + 4}" width="{width}" height="{BOX_HEIGHT + ROW_GAP - 8}" '
                   f'fill="{"#f7f9fa" if row_of[level] % 2 == 0 else "#ffffff"}"/>')
        out.append(f'<text x="8" y="{y + BOX_HEIGHT / 2 - 2}" font-size="13" font-weight="bold">L{level}</text>'
                   f'<text x="8" y="{y + BOX_HEIGHT / 2 + 13}" font-size="10" fill="#546e7a">stride {2 ** level}</text>')
    for u, v in edges:
        out.append(_edge(boxes[u], boxes[v], x_of, y_of, ids))
    for box in boxes:
        out.append(_box(box, x_of(box), y_of(box), colors[box.kind]))
    out.append(_legend(colors, legend_y))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _edge(source: Box, target: Box, x_of, y_of, ids: str) -> str:
    x0, y0 = x_of(source) + BOX_WIDTH, y_of(source) + BOX_HEIGHT / 2
    x1, y1 = x_of(target), y_of(target) + BOX_HEIGHT / 2
    change = target.level - source.level
    key, color = ("down", DOWN_COLOR) if change > 0 else ("up", UP_COLOR) if change < 0 else ("same", SAME_COLOR)
    bend = max(18.0, (x1 - x0) / 2)
    path = f"M {x0:.1f} {y0:.1f} C {x0 + bend:.1f} {y0:.1f}, {x1 - bend:.1f} {y1:.1f}, {x1:.1f} {y1:.1f}"
    dash = ' stroke-dasharray="5 3"' if change else ""
    tip = (f"{source.names[-1]} → {target.names[0]}" +
           (f": {'downsample' if change > 0 else 'upsample'} ×{2 ** abs(change)}" if change else ""))
    parts = [f'<g class="edge edge-{key}"><title>{escape(tip)}</title>',
             f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.3"{dash} marker-end="url(#{ids}-arrow-{key})"/>']
    if change:
        label = f"{'↓' if change > 0 else '↑'}{2 ** abs(change)}"
        lx, ly = x1 - 12, y1 - 6 if change > 0 else y1 + 13
        parts.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="10" text-anchor="end" fill="{color}">{label}</text>')
    parts.append("</g>")
    return "".join(parts)


def _box(box: Box, x: float, y: float, color: str) -> str:
    count = f" ×{len(box.names)}" if len(box.names) > 1 else ""
    detail = (f"{box.channels}ch" + (f" · k{box.kernel}" if box.kernel > 1 else "") +
              (f" · {box.dilation_text}" if box.dilation_text else ""))
    stroke = ' stroke="#212121" stroke-width="2.4"' if box.outputs else ' stroke="#455a64" stroke-width="0.8"'
    tip = (f"{box.title}: {box.kind}{count}, {box.channels} channels, kernel {box.kernel}, L{box.level} "
           f"(stride {2 ** box.level})")
    if box.dilation_text:
        tip += f", dilation {','.join(map(str, box.dilations))}"
    if box.outputs:
        tip += f"; output {', '.join(box.outputs)}"
    short = box.title if len(box.title) <= 20 else box.title[:19] + "…"
    parts = [f'<g class="block block-{escape(box.kind)}"><title>{escape(tip)}</title>',
             f'<rect x="{x}" y="{y}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="6" fill="{color}"{stroke}/>',
             f'<text x="{x + BOX_WIDTH / 2}" y="{y + 14}" font-size="9.5" text-anchor="middle" fill="#263238">'
             f'{escape(short)}</text>',
             f'<text x="{x + BOX_WIDTH / 2}" y="{y + 29}" font-size="11" font-weight="bold" text-anchor="middle">'
             f'{escape(box.kind)}{count}</text>',
             f'<text x="{x + BOX_WIDTH / 2}" y="{y + 43}" font-size="10" text-anchor="middle">{escape(detail)}</text>']
    if box.outputs:
        parts.append(f'<text x="{x + BOX_WIDTH - 3}" y="{y - 3}" font-size="10" font-weight="bold" '
                     f'text-anchor="end">{escape(", ".join(box.outputs))}</text>')
    parts.append("</g>")
    return "".join(parts)


def _legend(colors: dict[str, str], y: float) -> str:
    parts = ['<g class="legend">']
    x = 8.0
    for kind, color in colors.items():
        parts.append(f'<rect x="{x}" y="{y}" width="12" height="12" rx="2" fill="{color}" stroke="#455a64" '
                     f'stroke-width="0.6"/><text x="{x + 16}" y="{y + 10}" font-size="10">{escape(kind)}</text>')
        x += 26 + 6.2 * len(kind)
    y2 = y + 24
    x = 8.0
    for label, color, dash in (("same level", SAME_COLOR, ""), ("downsample ↓", DOWN_COLOR, "5 3"),
                               ("upsample ↑", UP_COLOR, "5 3")):
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<line x1="{x}" y1="{y2 + 5}" x2="{x + 26}" y2="{y2 + 5}" stroke="{color}" stroke-width="1.5"'
                     f'{dashed}/><text x="{x + 31}" y="{y2 + 9}" font-size="10">{escape(label)}</text>')
        x += 40 + 6.2 * len(label)
    parts.append('<text x="{0}" y="{1}" font-size="10" fill="#546e7a">bold border: output · kN: kernel · dN: dilation · '
                 '×n: n identical blocks in a row</text>'.format(x + 10, y2 + 9))
    parts.append("</g>")
    return "".join(parts)


def to_html(graph: Graph, *, collapse: bool = True) -> str:
    """A standalone page around the SVG (no scripts, no external resources)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(graph.name)}</title>"
            "<style>body{font-family:Helvetica,Arial,sans-serif;margin:16px;}"
            "div.scroll{overflow-x:auto;}</style></head><body>\n"
            f"<div class=\"scroll\">{to_svg(graph, collapse=collapse)}</div>\n</body></html>\n")


__all__ = ["Box", "KIND_COLORS", "layout", "to_html", "to_svg"]
