"""Sparse autoencoders: one class per architecture (``base``, ``standard``, ``topk``, ``jumprelu``) found through
``registry``; the training recipes (``presets``), the training loop (``train``) and SAELens interop (``saelens``)."""
