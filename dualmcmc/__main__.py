"""python -m dualmcmc train CONFIG [--set key=value ...] | sample RUN | evaluate RUN"""
import sys

from .cli import main

sys.exit(main())
