"""wflwv.benchmark"""
