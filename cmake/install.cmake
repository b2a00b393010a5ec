# make install PREFIX=/usr DESTDIR=DIR: Debian's usual places.
#   ferry   -> bin          ferryd -> sbin
#   doc/*.N -> share/man/manN        (ferry.1, ferryd.8, ferryd.conf.5, ...)
#   contrib/systemd/ferryd.service.in -> ferryd.service and ferryd@.service in the
#                           systemd unit directory (/lib/systemd/system
#                           for PREFIX=/usr, as systemd.pc says on Debian 12)
#   contrib/bash-completion/ferry -> share/bash-completion/completions/ferry
#   contrib/ferryd.conf  -> SYSCONFDIR/ferry/ferryd.conf (not over an existing
#                           one) and share/doc/ferry/examples/ferryd.conf
#   contrib/prometheus/* -> share/ferry/prometheus/ (whatever is there)
include(GNUInstallDirs)

install(TARGETS ferry RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS ferryd RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})

file(GLOB FERRY_MANPAGES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/doc/*.[1-8])
foreach(page ${FERRY_MANPAGES})
  string(REGEX MATCH "[1-8]$" section ${page})
  install(FILES ${page} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
endforeach()

if(NOT FERRY_SYSTEMD_UNIT_DIR)
  set(FERRY_SYSTEMD_UNIT_DIR ${CMAKE_INSTALL_PREFIX}/lib/systemd/system)
  if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    pkg_get_variable(_unitdir systemd systemdsystemunitdir)
    if(_unitdir)
      set(FERRY_SYSTEMD_UNIT_DIR ${_unitdir})
    else()
      set(FERRY_SYSTEMD_UNIT_DIR /lib/systemd/system)
    endif()
  endif()
endif()
set(FERRY_SYSTEMD_UNIT_DIR ${FERRY_SYSTEMD_UNIT_DIR} CACHE PATH "where the systemd units go")
# One unit source, two units: ferryd.service reads SYSCONFDIR/ferry/ferryd.conf,
# the template ferryd@NAME.service reads SYSCONFDIR/ferry/NAME.conf.
set(FERRY_UNIT_CONF ${CMAKE_INSTALL_FULL_SYSCONFDIR}/ferry/ferryd.conf)
set(FERRY_UNIT_HEAD "ferryd serving the pool that ${FERRY_UNIT_CONF} names.")
configure_file(${CMAKE_SOURCE_DIR}/contrib/systemd/ferryd.service.in
               ${CMAKE_BINARY_DIR}/contrib/systemd/ferryd.service @ONLY)
set(FERRY_UNIT_CONF ${CMAKE_INSTALL_FULL_SYSCONFDIR}/ferry/%i.conf)
set(FERRY_UNIT_HEAD "One ferryd per configuration file: ferryd@NAME.service serves the pool of ${CMAKE_INSTALL_FULL_SYSCONFDIR}/ferry/NAME.conf.")
configure_file(${CMAKE_SOURCE_DIR}/contrib/systemd/ferryd.service.in
               ${CMAKE_BINARY_DIR}/contrib/systemd/ferryd@.service @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/contrib/systemd/ferryd.service
              ${CMAKE_BINARY_DIR}/contrib/systemd/ferryd@.service
        DESTINATION ${FERRY_SYSTEMD_UNIT_DIR})

install(FILES ${CMAKE_SOURCE_DIR}/contrib/bash-completion/ferry
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions)

install(FILES ${CMAKE_SOURCE_DIR}/contrib/ferryd.conf DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
# The administrator's configuration is never overwritten.
install(CODE "
  set(conf \"\$ENV{DESTDIR}${CMAKE_INSTALL_FULL_SYSCONFDIR}/ferry/ferryd.conf\")
  if(EXISTS \"\${conf}\")
    message(STATUS \"Kept: \${conf}\")
  else()
    file(INSTALL ${CMAKE_SOURCE_DIR}/contrib/ferryd.conf
         DESTINATION \"\$ENV{DESTDIR}${CMAKE_INSTALL_FULL_SYSCONFDIR}/ferry\")
  endif()")
install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})

file(GLOB FERRY_PROMETHEUS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/contrib/prometheus/*)
if(FERRY_PROMETHEUS)
  install(FILES ${FERRY_PROMETHEUS} DESTINATION ${CMAKE_INSTALL_DATADIR}/ferry/prometheus)
endif()
