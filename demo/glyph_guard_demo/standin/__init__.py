"""A stand-in for the Glyph service (vLLM-shaped API with an engine child, Gradio-shaped UI).

It needs no GPU and no model weights: it renders request text to PNG pages and answers with
a short completion, and it can play the faults the guard must survive. It is not Glyph.
"""
