"""wflwv.filters"""
