# Reference (run by hand): encode each bench/quality run folder's clips with its encoder; saves /tmp/res/<corpus>-s<seed>.npz
"""Encode each seed's run with its encoder (plain + TTA variants) and save features + labels."""
import sys, numpy as np, os
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.dirname(__import__('os').path.dirname(__import__('os').path.abspath(__file__)))))
from storage import Store
from tasks.encode import load_encoder, encode_blocks
corpus = sys.argv[1]; seeds = [int(s) for s in sys.argv[2].split(',')]
base = f'/tmp/audioclust-bench-quality/{corpus}'
store = Store.open(f'{base}/default.zarr')
ok = store.ok()
blocks = store.read('blocks')[ok].astype(np.float32)
labels = store.read('label').astype(str)[ok]
paths = store.read('path').astype(str)[ok]
for s in seeds:
    enc = load_encoder(f'{base}/default-s{s}/model/encoder.keras')
    f = encode_blocks(enc, blocks)
    # TTA: crops of 0.8 width at 5 offsets, averaged
    n, h, t, c = blocks.shape
    w = int(round(t * 0.8 / 8) * 8)
    offs = np.linspace(0, t - w, 5).astype(int)
    import keras
    inp = keras.Input((h, None, c)); x = inp
    for l in enc.layers[1:]:
        if l.name in ('gap', 'gmp', 'code'): continue
        x = l(x)
    fm = keras.Model(inp, x)
    def emb(b):
        m = fm.predict(b, batch_size=256, verbose=0)
        return np.concatenate([m.mean((1, 2)), m.max((1, 2))], 1)
    assert np.allclose(emb(blocks[:8]), f[:8], atol=1e-4), 'rebuild mismatch'
    tta = np.mean([emb(np.ascontiguousarray(blocks[:, :, o:o + w])) for o in offs], 0)
    np.savez(f'/tmp/res/{corpus}-s{s}.npz', f=f, tta=tta, labels=labels, paths=paths)
    print(corpus, s, f.shape)
