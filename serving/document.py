"""YAML documents read from Service files within limits: file size, nesting depth and alias expansion.

Every Service file goes through here, at start-up and on each edit, so a broken or hostile file is refused
with one line naming it (and the place in it) instead of exhausting memory, time or Python's recursion limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Final

import yaml

MAX_FILE_BYTES: Final = 1 << 20
"""1 MiB per file: Kubernetes caps every object at etcd's 1.5 MiB request limit (and a ConfigMap at 1 MiB), so
a cluster would refuse a bigger Service; a real one is a few KiB. Pure-Python PyYAML reads 25-60 KiB/s on a
2-core machine, so a file at the limit takes under a minute (edits are parsed off the event loop)."""
MAX_DEPTH: Final = 64
"""Lists and mappings nested at most 64 deep. A Service's deepest field
(spec.template.spec.volumes[].projected.sources[].configMap.items[].path) is inside 12; 64 leaves room for
anything real while PyYAML's recursive composer and constructor, a few frames per level, stay far from
Python's 1000-frame recursion limit."""
MAX_EXPANDED: Final = 2 * MAX_FILE_BYTES
"""Size of a file's documents with every alias written out in full (as kubectl sends them, in JSON): one per
list or mapping plus each scalar's length. Without aliases it stays about the file's length in bytes, so
only aliases reach twice the file limit (a "billion laughs" file of a few hundred bytes expands to GiB)."""
_YAML_TAG: Final = "tag:yaml.org,2002:"


class DocumentError(ValueError):
    """A file cannot be read as YAML documents; `problem` is one line naming the file and, if known, where."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


def read_text(path: Path) -> str:
    """The file's text, refused before reading when it is not a regular file or is over `MAX_FILE_BYTES`.

    Opened non-blocking, so a named pipe put in place of the file is refused instead of blocking forever;
    at most `MAX_FILE_BYTES + 1` bytes are read even from a file that grows meanwhile.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                kind = "is a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
                raise DocumentError(f"{path}: cannot read: {kind}")
            if info.st_size > MAX_FILE_BYTES:
                raise DocumentError(_too_large(path, info.st_size))
            with open(fd, "rb", closefd=False) as file:
                data = file.read(MAX_FILE_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise DocumentError(_too_large(path, len(data)))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DocumentError(
            f"{path}: line {line}: cannot read: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}: {exc.reason})"
        ) from None


def parse(text: str, source: Path) -> list[object]:
    """Every document of a YAML stream (None for an empty one); `DocumentError` for text that is not YAML,
    is over a limit or has a duplicate mapping key."""
    if len(text) > MAX_FILE_BYTES:
        raise DocumentError(_too_large(source, len(text), "characters"))
    try:
        return list(yaml.load_all(text, Loader=_BoundedLoader))  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        raise DocumentError(f"{source}: {where}invalid YAML: {_one_line(what)}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; `position` indexes `text`
        position = int(exc.position)
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        what = str(exc).split("\n", 1)[0]
        raise DocumentError(f"{source}: line {line}, column {column}: invalid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise DocumentError(f"{source}: invalid YAML: {_one_line(str(exc))}") from None


def load(path: Path) -> list[object]:
    """`parse(read_text(path))`."""
    return parse(read_text(path), path)


def _too_large(path: Path, size: int, unit: str = "bytes") -> str:
    return (
        f"{path}: too large: {size} {unit}, over the limit of {MAX_FILE_BYTES} bytes (1 MiB) for a Service "
        "file (Kubernetes refuses objects over 1.5 MiB)"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that measures each node as it is composed, before anything is constructed.

    A node's (height, expanded size) is known once it is composed, and an alias reuses its target's, so
    nesting and alias expansion are refused at the node that crosses a limit, without walking any subtree
    twice. Also rejects duplicate mapping keys, as Kubernetes' strict field validation does.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open = 0
        """Lists and mappings being composed around the current node."""
        self._measures: dict[yaml.Node, tuple[int, int]] = {}
        """(height in lists and mappings, expanded size) of each node of the document composed so far."""
        self._expanded = 0
        """Expanded size of the file's earlier documents."""

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            self._expanded += self._measures[node][1]
            self._check_size(self._expanded, node)
        self._measures.clear()  # anchors do not cross documents
        return node

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
        # The pure-Python parser's marks (the C one's type is only in the stubs' union).
        mark = event.start_mark if isinstance(event.start_mark, yaml.Mark) else None
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)  # an undefined alias raises here
            assert node is not None
            measure = self._measures.get(node)
            if measure is None:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"alias *{event.anchor} refers to a node that contains it: a cycle cannot be an object",
                    mark,
                )
            self._check_depth(self._open + measure[0], mark)
            return node
        collection = isinstance(event, yaml.CollectionStartEvent)
        if collection:
            self._check_depth(self._open + 1, mark)
            self._open += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            if collection:
                self._open -= 1
        assert node is not None
        measure = self._measure(node)
        self._check_size(measure[1], node)
        self._measures[node] = measure
        return node

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        if isinstance(node, yaml.ScalarNode):
            return 0, max(1, len(node.value))
        children: list[yaml.Node] = (
            list(node.value) if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
        )
        measures = [self._measures[child] for child in children]
        return 1 + max((m[0] for m in measures), default=0), 1 + sum(m[1] for m in measures)

    def _check_depth(self, depth: int, mark: yaml.Mark | None) -> None:
        if depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"lists and mappings nested deeper than {MAX_DEPTH} levels (a Service needs at most 12)",
                mark,
            )

    def _check_size(self, size: int, node: yaml.Node) -> None:
        if size > MAX_EXPANDED:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases expand the documents past {MAX_EXPANDED} bytes (twice the file size limit)",
                node.start_mark,
            )

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return super().construct_object(node, deep)
        try:
            return super().construct_object(node, deep)
        # PyYAML's scalar constructors trust the tag: `!!int abc`, `!!bool maybe`, `!!float ''`,
        # `2001-02-30` or an int over Python's 4300 digits fail with these instead of a YAMLError.
        except (ValueError, LookupError, AttributeError, TypeError) as exc:
            tag = "!!" + node.tag.removeprefix(_YAML_TAG) if node.tag.startswith(_YAML_TAG) else node.tag
            shown = repr(node.value[:40]) + ("..." if len(node.value) > 40 else "")
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown} as {tag}: {_one_line(str(exc))}", node.start_mark
            ) from None


def _construct_unique_mapping(loader: _BoundedLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # an unhashable key: construct_mapping reports it with its position
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_BoundedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
