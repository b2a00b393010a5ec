# make install PREFIX=/usr DESTDIR=DIR (= cmake --install BUILD --prefix PREFIX):
# Debian's usual places.
#   ferry  -> bin, ferryd -> sbin
#   doc/*.N -> share/man/manN        (ferry.1, ferryd.8, ferryd.conf.5, ...)
#   contrib/bash-completion/ferry -> share/bash-completion/completions/ferry
#   contrib/ferryd.conf -> share/doc/ferry/examples/ and ETC/ferry/ferryd.conf
#                          (never over an existing one)
#   contrib/systemd/ferryd.service.in -> ferryd.service and ferryd@.service in
#                          UNITDIR, with the paths of this installation
#   contrib/prometheus/* -> share/ferry/prometheus/ (whatever is there)
# ETC and UNITDIR follow the prefix given at install time: /etc and
# /lib/systemd/system (systemd.pc on Debian 12) for /usr, PREFIX/etc and
# PREFIX/lib/systemd/system otherwise; -DFERRY_SYSTEMD_UNIT_DIR=... and
# -DFERRY_SYSCONF_DIR=... force them.
install(TARGETS ferry RUNTIME DESTINATION bin)
install(TARGETS ferryd RUNTIME DESTINATION sbin)

file(GLOB FERRY_MANPAGES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/doc/*.[1-8])
foreach(page ${FERRY_MANPAGES})
  string(REGEX MATCH "[1-8]$" section ${page})
  install(FILES ${page} DESTINATION share/man/man${section})
endforeach()

install(FILES ${CMAKE_SOURCE_DIR}/contrib/bash-completion/ferry
        DESTINATION share/bash-completion/completions)
install(FILES ${CMAKE_SOURCE_DIR}/contrib/ferryd.conf DESTINATION share/doc/ferry/examples)
install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION share/doc/ferry)

file(GLOB FERRY_PROMETHEUS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/contrib/prometheus/*)
if(FERRY_PROMETHEUS)
  install(FILES ${FERRY_PROMETHEUS} DESTINATION share/ferry/prometheus)
endif()

pkg_get_variable(FERRY_USR_UNIT_DIR systemd systemdsystemunitdir)
if(NOT FERRY_USR_UNIT_DIR)
  set(FERRY_USR_UNIT_DIR /lib/systemd/system)
endif()
set(FERRY_SYSTEMD_UNIT_DIR "" CACHE PATH "where the systemd units go (default: see cmake/install.cmake)")
set(FERRY_SYSCONF_DIR "" CACHE PATH "where ferry/ferryd.conf goes (default: see cmake/install.cmake)")
install(CODE "
  set(FERRY_SOURCE_DIR \"${CMAKE_SOURCE_DIR}\")
  set(FERRY_BINARY_DIR \"${CMAKE_BINARY_DIR}\")
  set(FERRY_USR_UNIT_DIR \"${FERRY_USR_UNIT_DIR}\")
  set(FERRY_SYSTEMD_UNIT_DIR \"${FERRY_SYSTEMD_UNIT_DIR}\")
  set(FERRY_SYSCONF_DIR \"${FERRY_SYSCONF_DIR}\")
  include(\"${CMAKE_SOURCE_DIR}/cmake/install-system.cmake\")")
