"""The pairs gallery: a bounded sample of pairs per strategy, shown with their images.

Sampling: of each strategy's pairs, the `per_strategy` whose ``stable_hash(seed,
id)`` is smallest are kept (a bottom-k sample, with a heap of k entries per
strategy). It is uniform, needs one streaming pass, and depends only on the ids
and the seed, not on the order of the file: the same run always shows the
same pairs.

Each card shows the negative's provenance as one line (`bpo.report.provenance`),
the original image, the weakened image the negative came from (for negatives
with a distortion), the prompt, and chosen beside rejected with
a word-level diff (`word_diff`): what the rejected response added or changed is
highlighted in it, what it lost is struck through in the chosen one.

The page is static: every strategy's gallery is open (a ``<details open>``, which a
reader may fold), each showing its first page of cards; its other pages show when
they are the ``:target`` of the pager's plain links (see `bpo.report.html.STYLE`).
No strategy hides behind a tab: comparing them is the point.
"""

from __future__ import annotations

import difflib
import heapq
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpo.data.records import Message, Negative, Pair, Sample
from bpo.pairs import stable_hash
from bpo.report.html import escape, truncate
from bpo.report.provenance import provenance_line
from bpo.report.thumbnails import Thumbnail, thumbnails

# Longest response or prompt shown, in characters; a record may be huge (untrusted
# input), the page may not. 350 words (the BPO release's cap) fit in ~2500.
MAX_TEXT_CHARS = 4000
MAX_PARAMS_CHARS = 600
# The diff's units: a word or a punctuation mark, with the whitespace after it
# (and any whitespace the text starts with). Units are compared without their
# whitespace, so that "to the left" against "at a bowl" is one change, not three.
_TOKENS = re.compile(r"^\s+|\w+\s*|[^\w\s]\s*")


@dataclass
class GalleryItem:
    """What one card shows: a pair and, when known, the provenance of its negative."""

    id: str
    strategy: str
    image: str | None
    prompt: list[Message]
    chosen: str
    rejected: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_pair(cls, pair: Pair) -> GalleryItem:
        return cls(pair.id, pair.strategy, pair.image, pair.prompt, pair.chosen, pair.rejected)

    @classmethod
    def from_negative(cls, negative: Negative, sample: Sample) -> GalleryItem:
        """A pair not assembled yet: the sample's gold response against the negative."""
        return cls(
            negative.id,
            negative.strategy,
            sample.image,
            sample.prompt,
            sample.response,
            negative.text,
            negative.params,
        )

    @property
    def distortion(self) -> dict[str, Any] | None:
        value = self.params.get("distortion")
        return value if isinstance(value, dict) else None


class BottomKSampler:
    """Keeps, per strategy, the `k` records with the smallest ``stable_hash(seed, id)``."""

    def __init__(self, k: int, *, seed: int = 0) -> None:
        self.k = k
        self.seed = str(seed)
        # Per strategy, a max-heap by key (keys negated): the root is the one to evict.
        # Entries are (-key, arrival, record): the arrival number settles equal keys
        # (a repeated id) without comparing records.
        self._heaps: dict[str, list[tuple[int, int, Any]]] = {}
        self._arrivals = 0

    def add(self, strategy: str, record_id: str, record: Any) -> None:
        if self.k <= 0:
            return
        key = stable_hash(self.seed, record_id)
        heap = self._heaps.setdefault(strategy, [])
        self._arrivals += 1
        if len(heap) < self.k:
            heapq.heappush(heap, (-key, -self._arrivals, record))
        elif -heap[0][0] > key:
            heapq.heapreplace(heap, (-key, -self._arrivals, record))

    def sample(self) -> dict[str, list[Any]]:
        """Strategy (sorted) -> its kept records, in hash order."""
        return {
            strategy: [entry[2] for entry in sorted(heap, key=lambda e: (-e[0], -e[1]))]
            for strategy, heap in sorted(self._heaps.items())
        }


def word_diff(chosen: str, rejected: str) -> tuple[str, str]:
    """Chosen and rejected as escaped HTML, with their word-level differences marked.

    Words the rejected response inserted or replaced are wrapped in ``<ins>``;
    words of the chosen response it deleted or replaced, in ``<del>``. Matching
    is `difflib.SequenceMatcher` over words and punctuation marks, with
    ``autojunk`` off (it would ignore frequent words in long texts).
    """
    left, right = _TOKENS.findall(chosen), _TOKENS.findall(rejected)
    matcher = difflib.SequenceMatcher(
        None, [token.strip() for token in left], [token.strip() for token in right], autojunk=False
    )
    chosen_html, rejected_html = [], []
    for operation, i1, i2, j1, j2 in matcher.get_opcodes():
        removed, added = "".join(left[i1:i2]), "".join(right[j1:j2])
        if operation == "equal":
            chosen_html.append(escape(removed))
            rejected_html.append(escape(added))
            continue
        if removed:
            chosen_html.append(_wrap("del", removed))
        if added:
            rejected_html.append(_wrap("ins", added))
    return "".join(chosen_html), "".join(rejected_html)


def _wrap(tag: str, text: str) -> str:
    """`text` in `tag`, leaving leading and trailing whitespace outside the mark."""
    core = text.strip()
    if not core:
        return escape(text)
    start = text.index(core)
    before, after = text[:start], text[start + len(core) :]
    return f"{escape(before)}<{tag}>{escape(core)}</{tag}>{escape(after)}"


def attach_params(items: Sequence[GalleryItem], negatives: Iterable[Negative]) -> None:
    """Give each item the params of the negative with its id (pair id = negative id)."""
    wanted = {item.id: item for item in items}
    for negative in negatives:
        item = wanted.get(negative.id)
        if item is not None:
            item.params = negative.params


def render_gallery(
    sample: Mapping[str, Sequence[GalleryItem]],
    totals: Mapping[str, int],
    image_roots: Sequence[Path | None],
    *,
    page_size: int,
    max_bytes: int,
) -> tuple[str, int]:
    """The gallery's HTML: links to each strategy, then each strategy's cards, paged.

    Cards are rendered round-robin across strategies until `max_bytes` of HTML is
    reached, so that no run (many strategies, huge images or texts) can make the
    page heavy; the cards left out are said.

    Args:
        sample: strategy -> the items to show.
        totals: strategy -> how many pairs it has in all.
        image_roots: where to look for images (see `thumbnails`).
        page_size: cards per page.
        max_bytes: the most HTML the cards may take.

    Returns:
        The HTML and the number of cards rendered.
    """
    cards: dict[str, list[str]] = {name: [] for name in sample}
    size = 0
    for strategy, item in _round_robin(sample):
        card = render_card(item, image_roots)
        if size + len(card) > max_bytes:
            break
        cards[strategy].append(card)
        size += len(card)
    shown = sum(len(values) for values in cards.values())
    links, strategies = [], []
    for strategy_index, (strategy, strategy_cards) in enumerate(cards.items()):
        total = totals.get(strategy, 0)
        anchor = f"pairs-{strategy_index}"
        links.append(f'<a href="#{anchor}">{escape(strategy)} ({total})</a>')
        strategies.append(
            f'<details class="strategy" id="{anchor}" data-strategy="{escape(strategy)}" open>'
            f'<summary><h3>{escape(strategy)} <span class="count">{len(strategy_cards)} of '
            f"{total} pairs shown</span></h3></summary>"
            f"{_pages(anchor, strategy, strategy_cards, page_size)}</details>"
        )
    legend = (
        '<p class="legend">In the rejected response, <ins>highlighted</ins> words are what it '
        "added or changed; in the chosen one, <del>struck</del> words are what it lost.</p>"
    )
    filters = f'<nav class="filters">go to: {"".join(links)}</nav>'
    html = f'{legend}{filters}<div class="gallery">{"".join(strategies)}</div>'
    return html, shown


def _pages(anchor: str, strategy: str, cards: Sequence[str], page_size: int) -> str:
    """One strategy's cards in pages: its first page shows until another of its pages
    is the ``:target`` (see `bpo.report.html.STYLE`)."""
    count = max(1, -(-len(cards) // page_size))
    anchors = [f"{anchor}-{page + 1}" for page in range(count)]
    pages = []
    for page in range(count):
        pager = ""
        if count > 1:
            numbers = " ".join(
                f'<a href="#{target}"{" class=current" if number == page + 1 else ""}>{number}</a>'
                for number, target in enumerate(anchors, 1)
            )
            pager = f'<nav class="pager">page {page + 1} of {count}: {numbers}</nav>'
        body = "".join(cards[page * page_size : (page + 1) * page_size])
        if not body:
            body = '<p class="note">no card: the gallery reached its size limit first.</p>'
        first = " first" if page == 0 else ""
        pages.append(
            f'<div class="gallery-page{first}" id="{anchors[page]}" '
            f'data-strategy="{escape(strategy)}">{pager}{body}</div>'
        )
    return "".join(pages)


def _round_robin(sample: Mapping[str, Sequence[GalleryItem]]) -> Iterator[tuple[str, GalleryItem]]:
    longest = max((len(items) for items in sample.values()), default=0)
    for index in range(longest):
        for strategy, items in sample.items():
            if index < len(items):
                yield strategy, items[index]


def render_card(item: GalleryItem, image_roots: Sequence[Path | None]) -> str:
    """One pair's card (every text escaped)."""
    original, weakened = thumbnails(item.image, image_roots, item.distortion, record_id=item.id)
    images = [_image(original, "original image")]
    if weakened is not None:
        images.append(_image(weakened, f"weakened image ({_distortion_label(item.distortion)})"))
    prompt = "".join(
        f'<div><span class="role">{escape(m["role"])}</span> '
        f"{escape(truncate(m['content'], MAX_TEXT_CHARS))}</div>"
        for m in item.prompt
    )
    chosen, rejected = word_diff(
        truncate(item.chosen, MAX_TEXT_CHARS), truncate(item.rejected, MAX_TEXT_CHARS)
    )
    params = provenance_line(item.params, MAX_PARAMS_CHARS) if item.params else ""
    if params:
        params = f'<div class="provenance">{params}</div>'
    return (
        f'<article class="pair" data-strategy="{escape(item.strategy)}">'
        f"<header>{escape(item.id)} · {escape(item.strategy)}{params}</header>"
        f'<div class="images">{"".join(images)}</div>'
        f'<div class="prompt">{prompt}</div>'
        '<div class="responses">'
        f'<div class="chosen"><h4>chosen</h4><p>{chosen}</p></div>'
        f'<div class="rejected"><h4>rejected</h4><p>{rejected}</p></div>'
        "</div></article>"
    )


def _image(thumbnail: Thumbnail, caption: str) -> str:
    if thumbnail.uri is None:
        return (
            f'<figure><div class="missing">{escape(thumbnail.error or "no image")}</div>'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    css = ' class="small"' if thumbnail.small else ""
    return (
        f'<figure><img{css} src="{thumbnail.uri}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _distortion_label(distortion: Mapping[str, Any] | None) -> str:
    """``diffusion step=700, seed 3``: what made the weakened image, no "None" for a gap."""
    if not distortion:
        return ""
    params = distortion.get("params")
    shown = ", ".join(f"{k}={v}" for k, v in params.items()) if isinstance(params, dict) else ""
    kind = distortion.get("kind") or "distortion"
    # `thumbnails.weaken` falls back on seed 0; the caption says the record had none.
    seed = distortion.get("seed")
    seed_text = f"seed {seed}" if seed is not None else "seed not recorded"
    return f"{kind}{f' {shown}' if shown else ''}, {seed_text}"
