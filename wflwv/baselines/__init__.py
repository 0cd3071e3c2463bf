"""wflwv.baselines"""
