"""The tiny preset's text side: an offline word-level tokenizer and a 2-layer CLIP text encoder.

The tokenizer is a `tokenizers` WordLevel model over a fixed vocabulary of instruction words
(lower-cased, split on whitespace and punctuation, unknown words -> `[UNK]`), wrapped in
`PreTrainedTokenizerFast` so it saves as `tokenizer.json` and loads with `AutoTokenizer`.
Like CLIP's, every sequence is `<|startoftext|> words <|endoftext|>` padded to `model_max_length`.
"""

from __future__ import annotations

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "<|startoftext|>", "<|endoftext|>")

# Words the Push-T instructions and their paraphrases use; anything else maps to [UNK].
INSTRUCTION_WORDS = """
a an the of to into with and or in on at as more less very slightly same keep it its this that than
make turn change modify replace paint repaint recolor recolour colour color colored coloured appear look
looks like real realistic photo photograph photographic camera style texture textured surface pattern
background foreground table tabletop desk floor wall board mat cloth paper fabric carpet
wood wooden oak pine walnut marble granite stone concrete metal steel aluminium aluminum plastic rubber
glass felt leather tile tiles tiled linoleum laminate cardboard
t shaped shape block piece object robot agent disk circle end effector goal marker target outline
red orange yellow green blue purple violet pink brown black white grey gray beige tan cream cyan
magenta teal navy olive maroon gold silver dark light bright pale deep muted warm cool matte glossy
shiny rough smooth noisy blurry sharp shadow shadows shading shaded lighting light lit soft hard
sim simulation simulated render rendered rendering flat plain uniform noise grain reflections reflection
mottled speckled striped checkered granular
- , . ' !
""".split()


def build_word_tokenizer(
    words: list[str] | tuple[str, ...] = tuple(INSTRUCTION_WORDS), max_length: int = 24
) -> PreTrainedTokenizerFast:
    """An offline CLIP-like tokenizer over `words` (no download, no merges file)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w.lower(), len(vocab))
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # splits "T-shaped" into t, -, shaped
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[
            ("<|startoftext|>", vocab["<|startoftext|>"]),
            ("<|endoftext|>", vocab["<|endoftext|>"]),
        ],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        model_max_length=max_length,
    )


def tiny_text_encoder(
    tokenizer: PreTrainedTokenizerFast, hidden_size: int = 64, layers: int = 2
) -> CLIPTextModel:
    """A small `CLIPTextModel` whose vocabulary and special ids match `tokenizer`."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        projection_dim=hidden_size,
    )
    return CLIPTextModel(config)
