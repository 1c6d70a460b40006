"""The hand-made "random ticket" of imp36-reinit-s0.json: IMP's round-02 masks of seed 0 with G
and D started from another init (seed 1000).

    python make_reinit_ticket.py RUN/seed-00/round-02/ticket.safetensors OUT.safetensors
    python scripts/learning_curve.py --gan cyclegan --preset quick --seed 0 --every 100 \\
        --ticket OUT.safetensors --json imp36-reinit-s0.json
"""
import sys

from lthgan import gans
from lthgan.ticket import Ticket

cfg = gans.default_config("cyclegan", "quick")
task = gans.build("cyclegan", cfg, seed=0)
Ticket.load(sys.argv[1]).apply(task.models)  # the IMP masks
other = gans.build("cyclegan", cfg, seed=1000).initial_state()
Ticket.from_model(task.models, other).save(sys.argv[2])
