"""A plain SASRec (pmixer-style: xavier init, embeddings x sqrt(d), SASRec's block, dot product with the
shared table, dropout 0.5, Adam lr 1e-3 betas (0.9, 0.98)) on our split and metric code: the reference the
two-tower's user tower was compared with (docs/benchmarks-beauty.md). Prints validation NDCG@10 every 2 epochs.

    HF_HUB_OFFLINE=1 python docs/ablations/plain_sasrec.py EPOCHS
"""
import sys, time, math, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from recsys.train.beauty_benchmark import load_beauty, find_data_dir
from recsys.train.splits import leave_one_out
from recsys.train.metrics import evaluate_full_ranking, SeenIndex
torch.manual_seed(0); np.random.seed(0)
EPOCHS=int(sys.argv[1]); VARIANT=sys.argv[2] if len(sys.argv)>2 else "plain"
d=64; L=50
data=load_beauty(find_data_dir()); n=data["n_items"]
split=leave_one_out(data["sequences"], data["timestamps"], max_len=L)
def arrays(seqs):
    inp=np.zeros((len(seqs),L),np.int64); tgt=np.zeros((len(seqs),L),np.int64)
    for u,s in enumerate(seqs):
        s=np.asarray(s)[-(L+1):]
        if len(s)<2: continue
        m=len(s)-1; inp[u,L-m:]=s[:-1]+1; tgt[u,L-m:]=s[1:]+1
    return inp,tgt
inp,tgt=arrays(split.train)
class Block(nn.Module):
    def __init__(s):
        super().__init__(); s.ln1=nn.LayerNorm(d); s.att=nn.MultiheadAttention(d,1,dropout=0.5,batch_first=True)
        s.ln2=nn.LayerNorm(d); s.ff=nn.Sequential(nn.Linear(d,d),nn.Dropout(0.5),nn.ReLU(),nn.Linear(d,d),nn.Dropout(0.5))
    def forward(s,x,mask):
        q=s.ln1(x); a,_=s.att(q,x,x,attn_mask=mask,need_weights=False); x=q+a
        x=s.ln2(x); return x+s.ff(x)
class M(nn.Module):
    def __init__(s):
        super().__init__(); s.emb=nn.Embedding(n+1,d,padding_idx=0); s.pos=nn.Embedding(L,d); s.drop=nn.Dropout(0.5)
        s.blocks=nn.ModuleList([Block(),Block()]); s.ln=nn.LayerNorm(d)
        for p in s.parameters():
            if p.dim()>1: nn.init.xavier_normal_(p)
    def forward(s,x):
        l=x.shape[1]; h=s.emb(x)*math.sqrt(d)+s.pos(torch.arange(l)); h=s.drop(h); keep=(x>0).unsqueeze(-1).float(); h=h*keep
        mask=~torch.tril(torch.ones(l,l,dtype=torch.bool))
        for b in s.blocks: h=b(h,mask)*keep
        return s.ln(h)
m=M(); opt=torch.optim.Adam(m.parameters(),lr=1e-3,betas=(0.9,0.98))
def score(rows, inputs):
    x=np.zeros((len(rows),L),np.int64)
    for j,r in enumerate(rows):
        s=np.asarray(inputs[r])[-L:]; x[j,L-len(s):]=s+1
    with torch.no_grad(): u=m(torch.from_numpy(x))[:,-1]
    return u@m.emb.weight[1:].T
t0=time.time()
for ep in range(1,EPOCHS+1):
    m.train(); perm=np.random.permutation(len(inp)); tot=0
    for i in range(0,len(perm),128):
        b=perm[i:i+128]; x=torch.from_numpy(inp[b]); y=torch.from_numpy(tgt[b])
        w=int((x>0).sum(1).max()); x=x[:,-w:]; y=y[:,-w:]
        h=m(x); keep=y>0; logits=h[keep]@m.emb.weight[1:].T
        loss=F.cross_entropy(logits,y[keep]-1); opt.zero_grad(); loss.backward(); opt.step(); tot+=loss.item()
    m.eval()
    if ep%2==0 or ep==EPOCHS:
        r=evaluate_full_ranking(lambda rows: score(rows, split.valid_input), split.valid_target, split.valid_seen,(10,),batch_size=2048)
        print(f"epoch {ep} loss {tot/(len(perm)/128):.4f} valid NDCG@10 {r['NDCG@10']:.4f} {time.time()-t0:.0f}s",flush=True)
