"""A small real Gradio app shaped like Glyph's demo: text in, a rendered page image out (which
Gradio caches in GRADIO_TEMP_DIR and never cleans). Run: python tests/e2e/gradio_app.py --port N."""

from __future__ import annotations

import argparse
import os
import textwrap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cache-dir", required=True, help="GRADIO_TEMP_DIR")
    parser.add_argument("--role", default="guarded", help="a marker for the tests' matchers")
    args = parser.parse_args()
    # Read by Gradio at import time.
    os.environ["GRADIO_TEMP_DIR"] = args.cache_dir
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

    import gradio as gr  # noqa: PLC0415
    from PIL import Image, ImageDraw  # noqa: PLC0415

    def render(text: str) -> Image.Image:
        """The page Glyph would read: the text drawn onto an image."""
        page = Image.new("RGB", (640, 480), "white")
        draw = ImageDraw.Draw(page)
        for row, line in enumerate(textwrap.wrap(text, 70)[:30]):
            draw.text((12, 12 + 15 * row), line, fill="black")
        return page

    demo = gr.Interface(
        fn=render,
        inputs=gr.Textbox(label="text"),
        outputs=gr.Image(type="pil", format="png"),
        api_name="render",
    )
    # An explicit port that is taken fails with "Cannot find empty port in range: N-N".
    demo.launch(server_name="127.0.0.1", server_port=args.port, show_error=True)


if __name__ == "__main__":
    main()
