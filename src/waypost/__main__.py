from waypost.cli import main

main()
