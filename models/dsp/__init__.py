"""Torch-free signal processing shared by the host, training and evaluation (numpy and scipy only).

The bottom layer of the package map (docs/DESIGN.md): nothing here imports torch or any other livesr
package, so the runtime, the trainer and the evaluator can all use it.
"""
