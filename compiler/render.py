"""Pictures of a graph for people: DOT, Mermaid and PNG (matplotlib, no graphviz binary).

The block graph collapses each block's primitives into one node. Rows are feature levels
(L1 at the top), so a scale-permuted backbone shows its permutation at a glance.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from archspec.compiler.graph import Graph


def block_graph(graph: Graph) -> nx.DiGraph:
    """One node per block (attributes: kind, level, channels, order), edges between blocks."""
    blocks = nx.DiGraph()
    owner = {}
    for order, (block, nodes) in enumerate(graph.blocks().items()):
        last = graph.nx.nodes[nodes[-1]]
        blocks.add_node(block, kind=graph.nx.nodes[nodes[0]]["block_kind"], level=last["level"],
                        channels=last["channels"], order=order)
        for node in nodes:
            owner[node] = block
    for u, v, slot in graph.nx.edges(data="slot"):
        if slot in graph.nx.nodes[v]["op"].reference_inputs:
            continue  # read for its size only (e.g. the image for CropToLevel)
        if owner[u] != owner[v]:
            blocks.add_edge(owner[u], owner[v])
    for output, node in graph.outputs.items():
        blocks.nodes[owner[node]].setdefault("outputs", []).append(output)
    return blocks


def _label(name: str, data: dict) -> str:
    outputs = f" -> {', '.join(data['outputs'])}" if data.get("outputs") else ""
    return f"{name}\\n{data['kind']} {data['channels']}ch L{data['level']}{outputs}"


def _ident(name: str) -> str:
    return "n_" + "".join(ch if ch.isalnum() else "_" for ch in name)


def to_dot(graph: Graph) -> str:
    """Graphviz text: one row per level (L0 at the top), blocks left to right in execution order.
    An invisible chain of level labels fixes the row order; edges that go up a level (upsampling)
    or stay in a row do not constrain the layout."""
    blocks = block_graph(graph)
    levels = sorted({d["level"] for _, d in blocks.nodes(data=True)})
    lines = [f'digraph "{graph.name}" {{', "  rankdir=TB; newrank=true;", '  node [shape=box, fontsize=10];']
    for level in levels:
        members = sorted((n for n, d in blocks.nodes(data=True) if d["level"] == level),
                         key=lambda n: blocks.nodes[n]["order"])
        lines.append(f'  subgraph "cluster_L{level}" {{ label="L{level} (stride {2 ** level})"; rank=same;')
        lines.append(f'    level_L{level} [label="L{level}", shape=plaintext];')
        for name in members:
            data = blocks.nodes[name]
            style = ', style=bold' if data.get("outputs") else ""
            lines.append(f'    {_ident(name)} [label="{_label(name, data)}"{style}];')
        chain = " -> ".join([f"level_L{level}"] + [_ident(n) for n in members])
        if members:
            lines.append(f"    {chain} [style=invis];")
        lines.append("  }")
    if len(levels) > 1:
        lines.append("  " + " -> ".join(f"level_L{level}" for level in levels) + " [style=invis];")
    for u, v in blocks.edges:
        free = " [constraint=false]" if blocks.nodes[v]["level"] <= blocks.nodes[u]["level"] else ""
        lines.append(f"  {_ident(u)} -> {_ident(v)}{free};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(graph: Graph) -> str:
    blocks = block_graph(graph)
    lines = ["flowchart LR"]
    for level in sorted({d["level"] for _, d in blocks.nodes(data=True)}):
        lines.append(f'  subgraph L{level}["L{level} (stride {2 ** level})"]')
        for name, data in blocks.nodes(data=True):
            if data["level"] == level:
                lines.append(f'    {_ident(name)}["{_label(name, data).replace(chr(92) + "n", "<br/>")}"]')
        lines.append("  end")
    for u, v in blocks.edges:
        lines.append(f"  {_ident(u)} --> {_ident(v)}")
    return "\n".join(lines) + "\n"


def to_png(graph: Graph, path: str | Path) -> Path:
    """Blocks left to right in execution order, one row per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = block_graph(graph)
    pos = {n: (d["order"], -d["level"]) for n, d in blocks.nodes(data=True)}
    width = max(6.0, 0.35 * blocks.number_of_nodes())
    fig, ax = plt.subplots(figsize=(width, 4.5))
    for u, v in blocks.edges:
        (x0, y0), (x1, y1) = pos[u], pos[v]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="->", color="0.6", lw=0.6, connectionstyle="arc3,rad=0.15"))
    kinds = sorted({d["kind"] for _, d in blocks.nodes(data=True)})
    colors = {k: plt.cm.tab10(i % 10) for i, k in enumerate(kinds)}
    for name, data in blocks.nodes(data=True):
        x, y = pos[name]
        ax.scatter([x], [y], s=90 if data.get("outputs") else 40, color=colors[data["kind"]], zorder=3,
                   edgecolors="black" if data.get("outputs") else "none")
        if data.get("outputs"):
            ax.text(x, y + 0.25, ",".join(data["outputs"]), ha="center", fontsize=7)
        elif blocks.number_of_nodes() <= 60:
            ax.text(x, y - 0.22, name.rsplit(".", 1)[-1], ha="center", va="top", fontsize=5.5, color="0.3")
    levels = sorted({d["level"] for _, d in blocks.nodes(data=True)})
    ax.set_yticks([-lv for lv in levels], [f"L{lv}" for lv in levels])
    ax.set_xlabel("block (execution order)")
    ax.set_title(graph.name)
    for kind, color in colors.items():
        ax.scatter([], [], color=color, label=kind)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    from archspec.files import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path
