# Reference (run by hand): the package's consensus on saved codes for several P (python consensus_variants.py esc10 0,1,2 16,32,40)
import sys, numpy as np, time
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.dirname(__import__('os').path.dirname(__import__('os').path.abspath(__file__)))))
from tasks.cluster import Clusterer, FeatureSpec, ClusterSpec
from sklearn.metrics import normalized_mutual_info_score as nmi
corpus=sys.argv[1]; seeds=[int(s) for s in sys.argv[2].split(',')]
for P in [int(p) for p in sys.argv[3].split(',')]:
  out=[]; tt=[]
  for s in seeds:
    d=np.load(f'/tmp/res/{corpus}-s{s}.npz')
    c=Clusterer(FeatureSpec(standardize=True,pca=P,whiten=True),ClusterSpec(method='consensus',k=10,seed=s))
    t=time.time(); lab=c.fit_predict(d['f']); tt.append(time.time()-t)
    out.append(nmi(d['labels'],lab))
    assert (c.predict(d['f'])==lab).all()
  print(corpus, P, f'{np.mean(out):.3f} ± {np.std(out):.3f}', np.round(out,3), f'{np.mean(tt):.1f}s')
