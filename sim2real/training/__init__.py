"""Training: base-editor pretraining, the D3PO specialist trainer, HIVE reward fine-tuning.

Heavy modules are imported where used; only the pure D3PO losses are re-exported here.
"""

from sim2real.training.d3po import d3po_loss, plackett_luce_loss

__all__ = ["d3po_loss", "plackett_luce_loss"]
