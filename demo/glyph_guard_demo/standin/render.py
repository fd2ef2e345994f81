"""Word-wraps text onto fixed-size PNG pages with Pillow, like Glyph's word2png step."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FontType = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class PageStyle:
    """Page geometry: the same for every request, like Glyph's fixed render config."""

    width: int = 600
    height: int = 800
    margin: int = 24
    font_size: int = 14
    line_spacing: float = 1.3
    max_pages: int = 100

    @property
    def line_height(self) -> int:
        return max(1, round(self.font_size * self.line_spacing))

    @property
    def lines_per_page(self) -> int:
        return max(1, (self.height - 2 * self.margin) // self.line_height)

    @property
    def text_width(self) -> int:
        return self.width - 2 * self.margin


@lru_cache(maxsize=4)
def _font(size: int) -> FontType:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _split_long(word: str, font: FontType, width: int) -> list[str]:
    pieces: list[str] = []
    current = ""
    for char in word:
        if current and font.getlength(current + char) > width:
            pieces.append(current)
            current = char
        else:
            current += char
    pieces.append(current)
    return pieces


def wrap(text: str, style: PageStyle) -> list[str]:
    """Break text into lines that fit the page width; paragraphs keep their line breaks."""
    font = _font(style.font_size)
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        current = ""
        for word in paragraph.split():
            candidate = f"{current} {word}" if current else word
            if font.getlength(candidate) <= style.text_width:
                current = candidate
                continue
            if current:
                lines.append(current)
            *whole, current = _split_long(word, font, style.text_width)
            lines.extend(whole)
        lines.append(current)
    return lines


def paginate(text: str, style: PageStyle) -> list[list[str]]:
    """Lines grouped into pages; at least one page, at most style.max_pages."""
    lines = wrap(text, style)
    size = style.lines_per_page
    pages = [lines[i : i + size] for i in range(0, len(lines), size)] or [[]]
    return pages[: style.max_pages]


def render_pages(text: str, out_dir: Path, style: PageStyle | None = None) -> list[Path]:
    """Render text to page_001.png, page_002.png, ... in out_dir; return their paths."""
    style = style or PageStyle()
    font = _font(style.font_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for number, page in enumerate(paginate(text, style), start=1):
        image = Image.new("RGB", (style.width, style.height), "white")
        draw = ImageDraw.Draw(image)
        for row, line in enumerate(page):
            y = style.margin + row * style.line_height
            draw.text((style.margin, y), line, fill="black", font=font)
        path = out_dir / f"page_{number:03d}.png"
        image.save(path, format="PNG")
        paths.append(path)
    return paths


def prune(pages_dir: Path, keep: int) -> None:
    """Remove all but the `keep` most recent request directories under pages_dir."""
    try:
        dirs = [entry for entry in pages_dir.iterdir() if entry.is_dir()]
    except OSError:
        return
    dirs.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
    for old in dirs[keep:]:
        shutil.rmtree(old, ignore_errors=True)
